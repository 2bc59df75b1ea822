"""Positional, noise-level and class embeddings shared by the DiT / MaskDiT backbones."""

import math

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------
# Fixed 2D sin-cos positional embedding (MAE, He et al. 2022).


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, embed_dim) with half sin, half cos (float64)."""
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)  # (M, D/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """(grid_size**2, embed_dim) table; half the channels encode rows, half columns."""
    assert embed_dim % 4 == 0, f"embed_dim {embed_dim} must be divisible by 4 for 2D sin-cos"
    coords = np.arange(grid_size, dtype=np.float64)
    grid_w, grid_h = np.meshgrid(coords, coords)  # MAE order: w first
    emb_h = sincos_1d(embed_dim // 2, grid_w)  # (L, D/2)
    emb_w = sincos_1d(embed_dim // 2, grid_h)  # (L, D/2)
    return torch.from_numpy(np.concatenate([emb_h, emb_w], axis=1)).float()  # (L, D)


# ----------------------------------------------------------------------------
# Noise-level embedding: c_noise -> 256-d sinusoid -> Linear-SiLU-Linear (DiT).


def sinusoidal_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) scalar conditions -> (N, dim) [cos | sin] features, frequencies from 1 to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
    args = c_noise.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)


class NoiseEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        freq = sinusoidal_embedding(c_noise, self.frequency_size)  # (N, 256)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))  # (N, D)


# ----------------------------------------------------------------------------
# Class embedding with a null label (index num_classes) for classifier-free guidance.


class LabelEmbedder(nn.Module):
    """Row num_classes is the null label; training drops labels to it with `drop_labels` (in the loss, where
    the draws are made for the global batch)."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)  # last row = null label

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)  # (N, D)


def drop_labels(labels: torch.Tensor, drop: torch.Tensor, null_label: int) -> torch.Tensor:
    """Label dropout for classifier-free guidance: labels where `drop` (N,) is set become the null label."""
    return torch.where(drop, torch.full_like(labels, null_label), labels)
