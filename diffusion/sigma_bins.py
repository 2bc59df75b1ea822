"""Bins over ln σ and per-bin sums: shared by the adaptive strategies (their statistics) and the σ telemetry.

Sums add across micro-batches and processes, so one all-reduce of a (1 + K, B) tensor gives every rank the
global per-bin means.
"""

import math

import torch


class LogSigmaGrid:
    """B equal bins over ln σ between ln σ_min and ln σ_max, the outer two open-ended."""

    def __init__(self, num_bins: int, sigma_min: float, sigma_max: float):
        edges = torch.linspace(math.log(sigma_min), math.log(sigma_max), num_bins + 1, dtype=torch.float64)
        self.num_bins = num_bins
        self.inner_edges = edges[1:-1]  # (B-1,)
        self.centers = 0.5 * (edges[1:] + edges[:-1])  # (B,) for interpolation and plots
        self.width = float(edges[1] - edges[0])  # of one bin, in ln σ

    def index(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) σ -> (N,) bin index."""
        return torch.bucketize(sigma.double().log(), self.inner_edges.to(sigma.device))


def per_bin_sums(bins: torch.Tensor, values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """bins (M,) int, values (K, M) -> (1 + K, B) float64: row 0 the sample count of each bin, row 1 + k the sum
    of values[k] over the bin's samples. Sums add across batches and processes (one all-reduce)."""
    rows = torch.cat([torch.ones_like(values[:1]), values]).double()  # (1 + K, M)
    return torch.zeros(len(rows), num_bins, dtype=torch.float64, device=rows.device).index_add_(1, bins, rows)


def bin_means(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """per_bin_sums (1 + K, B) -> (count (B,), means (K, B)); the mean of a bin without samples is 0."""
    count = sums[0]
    return count, sums[1:] / count.clamp_min(1)


