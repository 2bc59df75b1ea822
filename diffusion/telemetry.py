"""Per-σ-bin telemetry for any strategy: empirical sampling density, loss and weight vs ln σ.

Each process accumulates per-bin sums locally on the device (no synchronisation per step); `summary` reduces
across processes at log time. The plot (SpeeD's motivation figure, live) is drawn by training/plots.py.
"""

import torch

from diffusion.sigma_bins import LogSigmaGrid, bin_means, per_bin_sums
from diffusion.strategies.base import NoiseLevelStrategy


class SigmaTelemetry:
    def __init__(self, device, num_bins: int = 24, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.grid = LogSigmaGrid(num_bins, sigma_min, sigma_max)
        self.grid.inner_edges = self.grid.inner_edges.to(device)
        self.sums = torch.zeros(2, num_bins, dtype=torch.float64, device=device)  # count, raw loss

    def observe(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> None:
        self.sums += per_bin_sums(self.grid.index(sigma), raw_loss[None], self.grid.num_bins)

    def summary(self, accelerator, strategy: NoiseLevelStrategy) -> dict:
        """Collective. -> {ln_sigma, density, loss, weight} lists over bins; resets the counts."""
        count, (loss,) = (t.cpu() for t in bin_means(accelerator.reduce(self.sums.clone(), reduction="sum")))
        self.sums.zero_()
        centers = self.grid.centers
        weight = strategy.loss_weight(centers.exp().float().to(self.sums.device)).cpu()
        return {"ln_sigma": centers.tolist(), "density": (count / count.sum().clamp_min(1) / self.grid.width).tolist(),
                "loss": [float(v) if c > 0 else None for v, c in zip(loss, count)], "weight": weight.tolist()}
