"""Per-σ-bin telemetry for any strategy: empirical sampling density, loss and weight vs ln σ.

Each process accumulates locally (no synchronisation per step); `summary` reduces across processes at log
time. `plot` draws SpeeD's motivation figure live: loss and sampling density against ln σ.
"""

import math
from pathlib import Path

import torch

from diffusion.strategies.base import NoiseLevelStrategy


class SigmaTelemetry:
    def __init__(self, device, num_bins: int = 24, sigma_min: float = 0.002, sigma_max: float = 80.0):
        edges = torch.linspace(math.log(sigma_min), math.log(sigma_max), num_bins + 1, dtype=torch.float64)
        self.inner_edges = edges[1:-1].to(device)
        self.centers = (0.5 * (edges[1:] + edges[:-1])).tolist()
        self.width = float(edges[1] - edges[0])
        self.sums = torch.zeros(2, num_bins, dtype=torch.float64, device=device)  # count, raw loss

    def observe(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> None:
        bins = torch.bucketize(sigma.double().log(), self.inner_edges)
        self.sums[0].index_add_(0, bins, torch.ones_like(raw_loss, dtype=torch.float64))
        self.sums[1].index_add_(0, bins, raw_loss.double())

    def summary(self, accelerator, strategy: NoiseLevelStrategy) -> dict:
        """Collective. -> {ln_sigma, density, loss, weight} lists over bins; resets the counts."""
        sums = accelerator.reduce(self.sums.clone(), reduction="sum").cpu()
        self.sums.zero_()
        count, loss = sums[0], sums[1] / sums[0].clamp_min(1)
        centers = torch.tensor(self.centers, dtype=torch.float64)
        weight = strategy.loss_weight(centers.exp().float().to(self.sums.device)).cpu()
        return {"ln_sigma": self.centers, "density": (count / count.sum().clamp_min(1) / self.width).tolist(),
                "loss": [float(v) if c > 0 else None for v, c in zip(loss, count)], "weight": weight.tolist()}


def plot_telemetry(summary: dict, title: str, path: Path) -> None:
    """Loss (unweighted, per bin), sampling density and each bin's share of the weighted loss vs ln σ; one PNG,
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataio.image_io import save_figure_atomic

    x = summary["ln_sigma"]
    fig, (ax_loss, ax_density) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    pts = [(xi, li) for xi, li in zip(x, summary["loss"]) if li is not None]
    if pts:
        ax_loss.plot(*zip(*pts), "o-")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("unweighted loss ||D − y||²")
    ax_loss.set_title(title)
    ax_density.bar(x, summary["density"], width=(x[1] - x[0]) * 0.9, alpha=0.6, label="sampling density")
    # Where the objective's mass sits: density × weight × loss per bin (the weighted loss each bin contributes).
    share = [d * w * (l or 0.0) for d, w, l in zip(summary["density"], summary["weight"], summary["loss"])]
    total = sum(share) * (x[1] - x[0]) or 1.0
    ax_density.plot(x, [v / total for v in share], "r-", label="share of the weighted loss (normalised)")
    ax_density.set_xlabel("ln σ")
    ax_density.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
