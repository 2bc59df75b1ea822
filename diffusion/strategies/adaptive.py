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
- `learning_progress`: a learning-progress sampler: q(b) ∝ p(b)·progress_b (floor-mixed with p), progress_b =
  the drop of a fast vs a slow loss average in the bin, shrunk by its standard error so that a stationary
  loss leaves q = p; importance-weighted to keep the objective unless keep_objective is false.
- `excess_loss`: samples where the model is furthest from what is achievable: q(b) ∝ p(b)·E[λ(ℓ − J*) | b],
  J*(σ) the irreducible loss of the ideal denoiser of the training set (diffusion/optimal_loss.py); keeps the
  objective by p/q weights, or (keep_objective false) changes it, as a pure sampling strategy.

Every one adapts from a fixed weighting λ(σ): EDM's (σ² + σ_d²)/(σσ_d)² by default, or Min-SNR-γ's min(1/σ², γ)
when `min_snr_gamma` is set, so an adaptive sampler can also work on the best fixed objective (issue #12: on
the time-to-quality benchmark Min-SNR-5 beats EDM's weighting, and under it most log-normal draws at very low or
high σ carry almost no weight — a proposal that follows the weighted loss spends fewer of them there).

Proposal strategies return p/q from `objective_ratio`, which the loss applies to the whole objective
(denoising and MAE terms), so the objective's expectation is exactly the base strategy's.
"""

import torch

from diffusion.sigma_bins import LogSigmaGrid, bin_means, per_bin_sums
from diffusion.strategies.base import NoiseLevelStrategy, edm_weight, min_snr_weight
from diffusion.strategies.params import AT_LEAST_ONE, AT_LEAST_TWO, DECAY, NON_NEGATIVE, POSITIVE, Range


# The parameters every binned adaptive strategy shares; `floor` (the share of the base density mixed into q)
# must be > 0, or p/q is unbounded where the learned q vanishes.
ADAPTIVE_RANGES = {"p_std": POSITIVE, "num_bins": AT_LEAST_TWO, "sigma_min": POSITIVE, "sigma_max": POSITIVE,
                   "min_count": AT_LEAST_ONE, "min_snr_gamma": POSITIVE}
FLOOR = Range(0, 1, low_open=True)


class LogSigmaBins(LogSigmaGrid):
    """The ln σ grid (diffusion/sigma_bins.py) and the base density N(p_mean, p_std²) on its bins."""

    def __init__(self, num_bins: int, sigma_min: float, sigma_max: float, p_mean: float, p_std: float):
        super().__init__(num_bins, sigma_min, sigma_max)
        self.p_mean, self.p_std = p_mean, p_std
        normal = torch.distributions.Normal(torch.tensor(p_mean, dtype=torch.float64),
                                            torch.tensor(p_std, dtype=torch.float64))
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), normal.cdf(self.inner_edges),
                         torch.ones(1, dtype=torch.float64)])
        self.cdf_lo, self.cdf_hi = cdf[:-1], cdf[1:]  # (B,)
        self.base_mass = cdf[1:] - cdf[:-1]  # (B,) p(b) under the log-normal

    def sample(self, bin_probs: torch.Tensor, batch: int, device, generator=None) -> torch.Tensor:
        """Pick bins from q(b), then ln σ from the base density truncated to the bin. -> (batch,) σ."""
        b = torch.multinomial(bin_probs.to(device).float(), batch, replacement=True, generator=generator)
        lo, hi = self.cdf_lo.to(device)[b], self.cdf_hi.to(device)[b]
        u = lo + (hi - lo) * torch.rand(batch, device=device, dtype=torch.float64, generator=generator)
        u = u.clamp(1e-12, 1 - 1e-12)
        return (self.p_mean + self.p_std * torch.special.ndtri(u)).exp().float()


class BinStatistics:
    """Per-bin exponential moving averages of a statistic, updated only where the update has samples. Its
    tensors live on the training device (NoiseLevelStrategy.to) and are updated in place."""

    def __init__(self, num_bins: int, beta: float):
        self.beta = beta  # EMA decay per update
        self.value = torch.zeros(num_bins, dtype=torch.float64)
        self.count = torch.zeros(num_bins, dtype=torch.float64)

    def update(self, count: torch.Tensor, mean: torch.Tensor) -> None:
        """count (B,) samples per bin in this update, mean (B,) their mean (ignored where count is 0)."""
        seen = count > 0
        first = seen & (self.count == 0)
        rate = torch.where(first, 1.0, torch.where(seen, 1 - self.beta, 0.0))
        self.value += rate * (mean - self.value)
        self.count += count

    def state_dict(self) -> dict:
        return {"value": self.value.to("cpu", copy=True), "count": self.count.to("cpu", copy=True)}

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
    keep_objective = False  # True: sample from q but weight by p/q, so the objective stays E_p[...]

    def __init__(self, p_mean: float, p_std: float, sigma_data: float, num_bins: int, sigma_min: float,
                 sigma_max: float, min_count: int, min_snr_gamma: float | None):
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be a positive number or null (EDM weighting), not {min_snr_gamma!r}")
        self.sigma_data, self.min_count, self.min_snr_gamma = sigma_data, min_count, min_snr_gamma
        self.bins = LogSigmaBins(num_bins, sigma_min, sigma_max, p_mean, p_std)
        self.stats: dict[str, BinStatistics] = {}

    def base_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fixed weighting λ(σ) the strategy adapts from: EDM's, or Min-SNR-γ's when min_snr_gamma is set."""
        if self.min_snr_gamma is None:
            return edm_weight(sigma, self.sigma_data)
        return min_snr_weight(sigma, self.min_snr_gamma)

    def bin_probs(self) -> torch.Tensor:
        """q(b); the base log-normal mass unless a subclass learns something else. (B,) float64."""
        return self.bins.base_mass

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        return self.bins.sample(self.bin_probs(), batch, device, generator)

    def importance_ratio(self, sigma: torch.Tensor) -> torch.Tensor:
        """p(σ)/q(σ) = p(b)/q(b) for the bin of σ: keeps the objective's expectation under q."""
        ratio = self.bins.base_mass / self.bin_probs().clamp_min(1e-300)
        return ratio.to(sigma.device)[self.bins.index(sigma)].float()

    def objective_ratio(self, sigma: torch.Tensor) -> torch.Tensor | None:
        return self.importance_ratio(sigma) if self.keep_objective else None

    def ready(self) -> torch.Tensor:
        return next(iter(self.stats.values())).count >= self.min_count

    def loss_statistics(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> torch.Tensor:
        """-> per_bin_sums (1 + K, B) of the K per-sample statistics (`sample_statistics`)."""
        weighted = self.base_weight(sigma.double()) * raw_loss.double()  # (M,) λℓ
        return per_bin_sums(self.bins.index(sigma), self.sample_statistics(sigma, weighted), self.bins.num_bins)

    def sample_statistics(self, sigma: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
        """(K, M): row k the per-sample value that the k-th bin statistic averages (`self.stats` order)."""
        return torch.stack([self.statistic(name, sigma, weighted) for name in self.stats])

    def statistic(self, name: str, sigma: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
        """The per-sample value that the bin statistic `name` averages; the weighted loss λℓ by default."""
        return weighted

    def update_from_sums(self, sums: torch.Tensor) -> None:
        count, means = bin_means(sums)
        for mean, stat in zip(means, self.stats.values()):
            stat.update(count, mean)

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
    PARAM_RANGES = {**ADAPTIVE_RANGES, "beta": DECAY}

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta: float = 0.99, num_bins: int = 32,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, min_count: int = 64,
                 min_snr_gamma: float | None = None, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count, min_snr_gamma)
        self.stats = {"mean": BinStatistics(num_bins, beta)}

    def log_uncertainty(self) -> torch.Tensor:
        """u_b = ln E[λℓ | b] where known; bins without enough samples take the p-weighted mean of the rest."""
        mean, ready = self.stats["mean"].value, self.ready()
        u = mean.clamp_min(1e-12).log()
        known_mass = self.bins.base_mass * ready  # (B,) zero where not ready
        fallback = (u * known_mass).sum() / known_mass.sum().clamp_min(1e-300)  # 0 while no bin is ready
        return torch.where(ready, u, fallback)  # branch-free, so it runs inside the compiled step

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        # EDM2 Eq. 21 at its optimum: λ(σ)/e^{u(σ)}, scaled by e^{E_p[u]} to stay at the base loss scale.
        u = self.log_uncertainty()
        u = u - (u * self.bins.base_mass).sum()
        u_sigma = interp(sigma.double().log(), self.bins.centers, u)
        return (self.base_weight(sigma.double()) * torch.exp(-u_sigma)).float()


class ImportanceSampling(BinnedAdaptive):
    name = "importance"
    PARAM_RANGES = {**ADAPTIVE_RANGES, "beta": DECAY, "floor": FLOOR}

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta: float = 0.99, floor: float = 0.25,
                 num_bins: int = 32, sigma_min: float = 0.002, sigma_max: float = 80.0, min_count: int = 64,
                 min_snr_gamma: float | None = None, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count, min_snr_gamma)
        self.floor = floor
        self.keep_objective = True  # the point of importance sampling: same objective, lower variance
        self.stats = {"second_moment": BinStatistics(num_bins, beta)}

    def statistic(self, name: str, sigma: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
        return weighted.square()

    def bin_probs(self) -> torch.Tensor:
        p, ready = self.bins.base_mass, self.ready()
        # Variance-optimal proposal for an importance-weighted estimate: q ∝ p·√E[(λℓ)²]. Bins not yet
        # measured (the far tails) borrow the largest measured value, so they are explored, not starved.
        rms = self.stats["second_moment"].value.clamp_min(0).sqrt()  # (B,) ≥ 0
        rms = torch.where(ready, rms, torch.where(ready, rms, 0).max())
        q = p * rms / (p * rms).sum().clamp_min(1e-300)
        # torch.where instead of Python branches: no host sync, one graph under torch.compile
        return torch.where(ready.any(), (1 - self.floor) * q + self.floor * p, p)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base_weight(sigma)  # p/q comes from objective_ratio, for every term


class LearningProgress(BinnedAdaptive):
    name = "learning_progress"
    PARAM_RANGES = {**ADAPTIVE_RANGES, "beta_fast": DECAY, "beta_slow": DECAY, "floor": FLOOR, "shrink_z": NON_NEGATIVE}

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta_fast: float = 0.9, beta_slow: float = 0.99,
                 floor: float = 0.5, shrink_z: float = 3.0, keep_objective: bool = True, num_bins: int = 32,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, min_count: int = 64,
                 min_snr_gamma: float | None = None, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count, min_snr_gamma)
        self.floor, self.shrink_z, self.keep_objective = floor, shrink_z, keep_objective
        # "noise": the variance v of one update's bin mean, as an EMA (slow rate) of half the squared difference
        # of successive bin means ("last"): a trend in the loss cancels in the difference, noise does not.
        self.stats = {"fast": BinStatistics(num_bins, beta_fast), "slow": BinStatistics(num_bins, beta_slow),
                      "noise": BinStatistics(num_bins, beta_slow), "last": BinStatistics(num_bins, 0.0)}

    def sample_statistics(self, sigma: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
        return weighted[None]  # (1, M): fast, slow and last all average λℓ; noise comes from the bin means

    def update_from_sums(self, sums: torch.Tensor) -> None:
        count, (batch_mean,) = bin_means(sums)  # (B,) this update's bin means (bins with no sample are not updated)
        last = self.stats["last"]
        paired = ((count > 0) & (last.count > 0)).double()  # bins with a previous mean to difference against
        half_sq_diff = 0.5 * (batch_mean - last.value).square()  # E = v when the loss is stationary
        self.stats["noise"].update(paired, half_sq_diff)  # one observation per paired bin
        for name in ("fast", "slow", "last"):
            self.stats[name].update(count, batch_mean)

    def progress_standard_error(self) -> torch.Tensor:
        """sd of (slow − fast) when the per-update bin means are iid with variance v: both are EMAs of the same
        sequence with rates a, b, so Var = v·(a/(2−a) + b/(2−b) − 2ab/(a+b−ab)). (B,)"""
        a, b = 1 - self.stats["fast"].beta, 1 - self.stats["slow"].beta
        factor = a / (2 - a) + b / (2 - b) - 2 * a * b / (a + b - a * b)
        return (self.stats["noise"].value.clamp_min(0) * factor).sqrt()

    def progress(self) -> torch.Tensor:
        """Relative loss decrease per bin, shrunk by its noise: max(0, slow − fast − z·se)/slow, ≥ 0. A loss that
        does not move gives 0 except with probability ~P(N(0,1) > z) per bin."""
        slow, fast = self.stats["slow"].value, self.stats["fast"].value
        drop = (slow - fast - self.shrink_z * self.progress_standard_error()).clamp_min(0)
        return drop / slow.clamp_min(1e-12) * self.ready()

    def bin_probs(self) -> torch.Tensor:
        p, lp = self.bins.base_mass, self.progress()
        mass = (p * lp).sum()
        q = p * lp / mass.clamp_min(1e-300)
        return torch.where(mass > 0, (1 - self.floor) * q + self.floor * p, p)  # q = p while nothing progresses

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base_weight(sigma)


class ExcessLoss(BinnedAdaptive):
    """Sample σ where the weighted loss is furthest above its irreducible part (the "optimal loss" idea of
    arXiv 2506.13763): q(b) ∝ p(b)·E[λ(σ)(ℓ − J*(σ)) | b], floor-mixed with p.

    ℓ is the unweighted per-element denoising loss, J*(σ) the per-element loss of the ideal denoiser of the
    training set (diffusion/optimal_loss.py), set by the trainer from a cached estimate before the first step.
    At high σ both approach the data variance, so the raw loss says "hard" where nothing is left to learn;
    the excess does not. The λ-weighting makes each bin's share of q its share of the reducible objective.
    `keep_objective` true: p/q weights keep E_p[objective]; false: a pure sampling strategy."""

    name = "excess_loss"
    PARAM_RANGES = {**ADAPTIVE_RANGES, "beta": DECAY, "floor": FLOOR}
    needs_optimal_loss = True

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, beta: float = 0.99, floor: float = 0.25,
                 keep_objective: bool = True, num_bins: int = 32, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 min_count: int = 64, min_snr_gamma: float | None = None, sigma_data: float = 0.5):
        super().__init__(p_mean, p_std, sigma_data, num_bins, sigma_min, sigma_max, min_count, min_snr_gamma)
        self.floor, self.keep_objective = floor, keep_objective
        self.stats = {"excess": BinStatistics(num_bins, beta)}
        self.optimal_sigma = self.optimal_loss = None  # (S,) σ grid and J* on it, float64

    def set_optimal_loss(self, sigma: torch.Tensor, optimal_loss: torch.Tensor) -> None:
        device = self.bins.centers.device  # wherever `to` put the strategy
        self.optimal_sigma, self.optimal_loss = sigma.double().to(device), optimal_loss.double().to(device)

    def optimal_loss_at(self, sigma: torch.Tensor) -> torch.Tensor:
        """J*(σ) interpolated in ln σ. (N,) float64."""
        if self.optimal_loss is None:
            raise RuntimeError("excess_loss: J* was not set (the trainer calls set_optimal_loss before training)")
        return interp(sigma.double().log(), self.optimal_sigma.log(), self.optimal_loss)

    def statistic(self, name: str, sigma: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
        # λ(σ)(ℓ − J*) = λℓ − λJ*
        return weighted - self.base_weight(sigma.double()) * self.optimal_loss_at(sigma)

    def bin_probs(self) -> torch.Tensor:
        p, ready = self.bins.base_mass, self.ready()
        excess = self.stats["excess"].value.clamp_min(0)  # (B,) ≥ 0
        # unmeasured tails borrow the largest measured excess: explored, not starved
        excess = torch.where(ready, excess, torch.where(ready, excess, 0).max())
        mass = (p * excess).sum()
        q = p * excess / mass.clamp_min(1e-300)
        return torch.where(ready.any() & (mass > 0), (1 - self.floor) * q + self.floor * p, p)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base_weight(sigma)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.optimal_loss is not None:
            state["optimal_loss"] = {"sigma": self.optimal_sigma.cpu(), "value": self.optimal_loss.cpu()}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "optimal_loss"})
        if "optimal_loss" in state:
            self.set_optimal_loss(state["optimal_loss"]["sigma"], state["optimal_loss"]["value"])
