"""Streaming feature statistics (float64) and the Fréchet distance (Heusel et al. 2017; ADM evaluator)."""

import numpy as np
import torch
from scipy import linalg


class FeatureStats:
    """Running Σx and Σxxᵀ in float64; also keeps the raw features when asked (precision/recall need them)."""

    def __init__(self, dim: int, keep_features: bool = False, max_kept: int = 50_000):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.keep, self.max_kept, self.kept = keep_features, max_kept, []

    def add(self, feats: torch.Tensor) -> None:
        x = feats.detach().to("cpu", torch.float64)  # (N, D)
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.sum_outer += x.T @ x
        if self.keep and sum(len(k) for k in self.kept) < self.max_kept:
            self.kept.append(x.float())

    def merge(self, other: "FeatureStats") -> None:
        self.n += other.n
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        self.kept.extend(other.kept)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample mean and unbiased covariance (np.cov convention, as ADM and EDM)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors, have {self.n}")
        mu = self.sum / self.n
        cov = (self.sum_outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()

    def features(self) -> torch.Tensor:
        return torch.cat(self.kept) if self.kept else torch.zeros(0, self.sum.shape[0])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}); regularised like ADM when the product is singular."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different dimension: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
