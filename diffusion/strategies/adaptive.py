"""Adaptive noise-level strategies: they learn from the losses of training itself.

All three keep per-bin statistics over ln σ (fixed bins, the outer two open-ended), updated from the
(σ, unweighted loss) of the whole global batch — gathered from every process, so each rank computes the
same state — and sample from the EDM log-normal reweighted per bin (a piecewise density with exact
inverse-CDF sampling inside each bin).

- `adaptive_weight`: EDM2's learned uncertainty weighting (Karras et al. 2024, Eq. 21) in closed form. EDM2
  minimises λℓ/e^{u(σ)} + u(σ) with a small network u; its optimum is u*(σ) = ln E[λℓ | σ], so we use the
  running per-bin mean of the weighted loss directly: weight = λ(σ)·c/E[λℓ | σ]. Every noise level then
  contributes equally to the gradient, whatever its loss scale. No extra parameters, exact resume.
- `importance`: variance-optimal importance sampling. Sample from q(b) ∝ p(b)·√E[(λℓ)² | b] (floor-mixed
  with p) and multiply the weight by p/q, so the objective's expectation is unchanged and the loss-magnitude
  proxy of the gradient variance is minimal.
- `learning_progress`: a learning-progress sampler: q(b) ∝ p(b)·(floor + progress_b), progress_b = relative
  drop of a fast vs a slow loss average in the bin; optionally importance-weighted to keep the objective.
"""

import math

import torch

from diffusion.strategies.base import NoiseLevelStrategy, edm_weight


class LogSigmaBins:
    """Fixed bins over ln σ between ln σ_min and ln σ_max and the base density N(p_mean, p_std²) on them."""

    def __init__(self, num_bins: int, sigma_min: float, sigma_max: float, p_mean: float, p_std: float):
        edges = torch.linspace(math.log(sigma_min), math.log(sigma_max), num_bins + 1, dtype=torch.float64)
        self.num_bins = num_bins
        self.inner_edges = edges[1:-1]  # (B-1,)
        self.centers = 0.5 * (edges[1:] + edges[:-1])  # (B,) for interpolation and plots
        self.p_mean, self.p_std = p_mean, p_std
        normal = torch.distributions.Normal(torch.tensor(p_mean, dtype=torch.float64),
                                            torch.tensor(p_std, dtype=torch.float64))
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), normal.cdf(self.inner_edges),
                         torch.ones(1, dtype=torch.float64)])
        self.cdf_lo, self.cdf_hi = cdf[:-1], cdf[1:]  # (B,)
        self.base_mass = cdf[1:] - cdf[:-1]  # (B,) p(b) under the log-normal

    def index(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(sigma.double().log(), self.inner_edges.to(sigma.device))

    def sample(self, bin_probs: torch.Tensor, batch: int, device, generator=None) -> torch.Tensor:
        """Pick bins from q(b), then ln σ from the base density truncated to the bin. -> (batch,) σ."""
        b = torch.multinomial(bin_probs.to(device).float(), batch, replacement=True, generator=generator)
        lo, hi = self.cdf_lo.to(device)[b], self.cdf_hi.to(device)[b]
        u = lo + (hi - lo) * torch.rand(batch, device=device, dtype=torch.float64, generator=generator)
        u = u.clamp(1e-12, 1 - 1e-12)
        return (self.p_mean + self.p_std * torch.special.ndtri(u)).exp().float()


class BinStatistics:
    """Per-bin exponential moving averages of a statistic, updated only where the batch has samples."""

    def __init__(self, num_bins: int, beta: float):
        self.beta = beta
        self.value = torch.zeros(num_bins, dtype=torch.float64)
        self.count = torch.zeros(num_bins, dtype=torch.float64)

    def update(self, bins: torch.Tensor, values: torch.Tensor) -> None:
        n = torch.zeros_like(self.count).index_add_(0, bins.cpu(), torch.ones_like(values, dtype=torch.float64).cpu())
        s = torch.zeros_like(self.value).index_add_(0, bins.cpu(), values.double().cpu())
        seen = n > 0
        batch_mean = s / n.clamp_min(1)
        first = seen & (self.count == 0)
        rate = torch.where(first, 1.0, torch.where(seen, 1 - self.beta, 0.0))
        self.value += rate * (batch_mean - self.value)
        self.count += n

    def state_dict(self) -> dict:
        return {"value": self.value.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.value.copy_(state["value"])
        self.count.copy_(state["count"])


def interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, constant beyond the ends (numpy.interp)."""
    xp, fp = xp.to(x.device), fp.to(x.device)
    i = torch.bucketize(x, xp).clamp(1, len(xp) - 1)
    t = ((x - xp[i - 1]) / (xp[i] - xp[i - 1])).clamp(0, 1)
    return fp[i - 1] + t * (fp[i] - fp[i - 1])


class BinnedAdaptive(NoiseLevelStrategy):
    """Shared machinery: bins, base density, sampling from q(b), state and report."""

    learns_from_losses = True

    def __init__(self, p_mean: float, p_std: float, sigma_data: float, num_bins: int, sigma_min: float,
                 sigma_max: float, min_count: int):
        self.sigma_data, self.min_count = sigma_data, min_count
        self.bins = LogSigmaBins(num_bins, sigma_min, sigma_max, p_mean, p_std)
        self.stats: dict[str, BinStatistics] = {}

    def bin_probs(self) -> torch.Tensor:
        """q(b); the base log-normal mass unless a subclass learns something else. (B,) float64."""
        return self.bins.base_mass

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        return self.bins.sample(self.bin_probs(), batch, device, generator)

    def importance_ratio(self, sigma: torch.Tensor) -> torch.Tensor:
        """p(σ)/q(σ) = p(b)/q(b) for the bin of σ: keeps the objective's expectation under q."""
        ratio = self.bins.base_mass / self.bin_probs().clamp_min(1e-300)
        return ratio.to(sigma.device)[self.bins.index(sigma)].float()

    def ready(self) -> torch.Tensor:
        return next(iter(self.stats.values())).count >= self.min_count

    def update(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> None:
        bins = self.bins.index(sigma)
        weighted = edm_weight(sigma.double(), self.sigma_data) * raw_loss.double()
        for name, stat in self.stats.items():
            stat.update(bins, weighted.square() if name == "second_moment" else weighted)

    def state_dict(self) -> dict:
        return {name: stat.state_dict() for name, stat in self.stats.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, stat in self.stats.items():
            stat.load_state_dict(state[name])

    def report(self) -> dict:
        q = self.bin_probs()
        entropy = -(q * q.clamp_min(1e-300).log()).sum()
        return {"q_effective_bins": float(entropy.exp()), "q_max_over_p": float((q / self.bins.base_mass).max()),
                "bins_ready": float(self.ready().double().mean())}


class AdaptiveWeighting(BinnedAdaptive):
    name = "adaptive_weight"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta: float = 0.99, num_bins: int = 32,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, min_count: int = 64, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count)
        self.stats = {"mean": BinStatistics(num_bins, beta)}

    def log_uncertainty(self) -> torch.Tensor:
        """u_b = ln E[λℓ | b] where known; bins without enough samples take the p-weighted mean of the rest."""
        mean, ready = self.stats["mean"].value, self.ready()
        if not ready.any():
            return torch.zeros_like(mean)
        u = mean.clamp_min(1e-12).log()
        fallback = (u * self.bins.base_mass * ready).sum() / (self.bins.base_mass * ready).sum()
        return torch.where(ready, u, fallback)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        # EDM2 Eq. 21 at its optimum: λ(σ)/e^{u(σ)}, scaled by e^{E_p[u]} to stay at the EDM loss scale.
        u = self.log_uncertainty()
        u = u - (u * self.bins.base_mass).sum()
        u_sigma = interp(sigma.double().log(), self.bins.centers, u)
        return (edm_weight(sigma.double(), self.sigma_data) * torch.exp(-u_sigma)).float()


class ImportanceSampling(BinnedAdaptive):
    name = "importance"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta: float = 0.99, floor: float = 0.25,
                 num_bins: int = 32, sigma_min: float = 0.002, sigma_max: float = 80.0, min_count: int = 64,
                 sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count)
        self.floor = floor
        self.stats = {"second_moment": BinStatistics(num_bins, beta)}

    def bin_probs(self) -> torch.Tensor:
        p, ready = self.bins.base_mass, self.ready()
        if not ready.any():
            return p
        # Variance-optimal proposal for an importance-weighted estimate: q ∝ p·√E[(λℓ)²]. Bins not yet
        # measured (the far tails) borrow the largest measured value, so they are explored, not starved.
        rms = self.stats["second_moment"].value.clamp_min(0).sqrt()
        rms = torch.where(ready, rms, rms[ready].max())
        q = p * rms
        q = q / q.sum()
        return (1 - self.floor) * q + self.floor * p

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_weight(sigma, self.sigma_data) * self.importance_ratio(sigma)


class LearningProgress(BinnedAdaptive):
    name = "learning_progress"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta_fast: float = 0.9, beta_slow: float = 0.99,
                 floor: float = 0.5, keep_objective: bool = False, num_bins: int = 32, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, min_count: int = 64, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count)
        self.floor, self.keep_objective = floor, keep_objective
        self.stats = {"fast": BinStatistics(num_bins, beta_fast), "slow": BinStatistics(num_bins, beta_slow)}

    def progress(self) -> torch.Tensor:
        """Relative loss decrease per bin, ≥ 0: (slow − fast)/slow."""
        slow, fast = self.stats["slow"].value, self.stats["fast"].value
        return ((slow - fast) / slow.clamp_min(1e-12)).clamp_min(0) * self.ready()

    def bin_probs(self) -> torch.Tensor:
        p, lp = self.bins.base_mass, self.progress()
        if lp.sum() <= 0:
            return p
        q = p * lp / (p * lp).sum()
        return (1 - self.floor) * q + self.floor * p

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        weight = edm_weight(sigma, self.sigma_data)
        return weight * self.importance_ratio(sigma) if self.keep_objective else weight
