"""Random token masking (MAE / MaskDiT) and the patchify helpers that share its token order."""

from dataclasses import dataclass

import torch


@dataclass
class TokenMask:
    """Which tokens of each sample the encoder sees.

    ids_keep:    (N, K) indices of the visible tokens, K = int(L * (1 - ratio)).
    ids_restore: (N, L) inverse permutation: position of each original token in [kept | removed].
    mask:        (N, L) float, 1 = removed (masked), 0 = visible.
    """

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]


def num_visible_tokens(num_tokens: int, ratio: float) -> int:
    return int(num_tokens * (1 - ratio))


def random_mask(batch: int, num_tokens: int, ratio: float, device, generator=None) -> TokenMask:
    """Per sample: argsort uniform noise, keep the first int(L*(1-r)) tokens (MaskDiT §3.1)."""
    return mask_from_noise(torch.rand(batch, num_tokens, device=device, generator=generator), ratio)


def mask_from_noise(noise: torch.Tensor, ratio: float) -> TokenMask:
    """(N, L) uniform noise -> the mask keeping each sample's int(L*(1-r)) lowest-noise tokens."""
    batch, num_tokens = noise.shape
    keep = num_visible_tokens(num_tokens, ratio)
    device = noise.device
    ids_shuffle = torch.argsort(noise, dim=1)  # (N, L)
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (N, L)
    ids_keep = ids_shuffle[:, :keep]  # (N, K)
    mask = torch.ones(batch, num_tokens, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (N, L) back in original token order
    return TokenMask(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def keep_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """(N, L, D) -> (N, K, D) visible tokens."""
    return torch.gather(x, 1, ids_keep[:, :, None].expand(-1, -1, x.shape[-1]))


def restore_tokens(x: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """(N, K, D) visible tokens + mask token at removed slots -> (N, L, D) in original order."""
    n, k, d = x.shape
    num_tokens = ids_restore.shape[1]
    fill = mask_token.to(x.dtype).expand(n, num_tokens - k, d)  # (N, L-K, D)
    x = torch.cat([x, fill], dim=1)  # (N, L, D) in shuffled order
    return torch.gather(x, 1, ids_restore[:, :, None].expand(-1, -1, d))  # (N, L, D)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), tokens in row-major order, channels last within a patch."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // patch, patch, w // patch, patch)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """(N, L, p*p*C) -> (N, C, H, W); inverse of patchify for square images."""
    n, num_tokens, _ = x.shape
    side = int(num_tokens**0.5)
    assert side * side == num_tokens, f"{num_tokens} tokens do not form a square grid"
    x = x.reshape(n, side, side, patch, patch, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, side * patch, side * patch)
