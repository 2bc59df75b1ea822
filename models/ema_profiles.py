"""EMA profiles: which past weights an averaged model is made of, and post-hoc reconstruction (EDM2 §3).

An EMA of the weights θ_1 … θ_t (θ_τ = the weights after optimizer step τ) is Σ_τ w_τ θ_τ; its *profile* is
the weight vector w over steps. Two families:

- the power-function EMA of EDM2 (Karras et al. 2024, arXiv 2312.02696, Eq. 3–4): β_t = (1 − 1/t)^(γ+1),
  whose profile at step t is the discretised density (γ+1) τ^γ / t^(γ+1), and whose length is the
  relative standard deviation σ_rel = √((γ+1) / ((γ+2)² (γ+3))) of that density over τ / t;
- the classic EMA (per-step β, or EDM's half-life with ramp-up), what training/ema.py tracks.

Post-hoc EMA: training stores snapshots of two power EMAs at regular intervals; afterwards the EMA of any
profile q is approximated by the least-squares combination Σ_k x_k (snapshot k) whose profile Σ_k x_k p_k is
closest to q (EDM2 §3.3). Everything here is exact arithmetic on the discrete step grid (binned for very long
runs), in float64 numpy: no torch, no training imports (reconstruction runs where sampling runs).
"""

import math

import numpy as np

MAX_GAMMA = 1e6  # σ_rel → 0 needs γ → ∞; nobody asks for σ_rel below ~1e-6
MAX_GRID_BINS = 16384  # longer runs are integrated on bins of several steps (see StepGrid)


# ----------------------------------------------------------------------------
# σ_rel ↔ γ (EDM2 Eq. 4).


def gamma_to_sigma_rel(gamma: float) -> float:
    """EDM2 Eq. 4: σ_rel = √((γ+1) / ((γ+2)² (γ+3))), the std of τ/t under the density (γ+1) x^γ on [0, 1]."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


# σ_rel(γ) rises from 0 at γ = −1 to its maximum at the γ below, then falls to 0 as γ → ∞; EDM2 uses the
# falling branch (γ ≥ 0: weights that grow towards the present), so the inverse is taken there.
GAMMA_AT_MAX_SIGMA_REL = (-5 + math.sqrt(17)) / 4  # d/dγ log σ_rel² = 0: 2γ² + 5γ + 1 = 0, larger root
MAX_SIGMA_REL = gamma_to_sigma_rel(GAMMA_AT_MAX_SIGMA_REL)  # ≈ 0.2934


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Inverse of gamma_to_sigma_rel on its falling branch: the largest real root of the cubic
    σ² (γ+2)² (γ+3) − (γ+1) = 0, found by bisection (σ_rel is monotone there)."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel {sigma_rel} must be in (0, {MAX_SIGMA_REL:.4f}): the power-function EMA "
                         "cannot be that long")
    lo, hi = GAMMA_AT_MAX_SIGMA_REL, MAX_GAMMA
    for _ in range(200):  # σ_rel(lo) ≥ target ≥ σ_rel(hi)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gamma_to_sigma_rel(mid) > sigma_rel else (lo, mid)
    return 0.5 * (lo + hi)


def power_beta(gamma: float, step: int) -> float:
    """EDM2 Eq. 3: β_t = (1 − 1/t)^(γ+1) at optimizer step t ≥ 1 (β_1 = 0: the EMA starts at θ_1)."""
    return (1 - 1 / step) ** (gamma + 1)


def classic_beta(batch_size: int, cur_nimg: int, decay: float | None, halflife_kimg: float | None,
                 rampup_ratio: float | None) -> float:
    """Per-step β of the classic EMA. Half-life form (EDM): β = 0.5^(batch / halflife_nimg), with the
    half-life ≤ rampup × images seen; or a fixed per-step decay."""
    if decay is not None:
        return decay
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


# ----------------------------------------------------------------------------
# Profiles on the step grid.


class StepGrid:
    """Steps 0 … num_steps (0 = the initial weights), grouped in bins of `bin_steps` consecutive steps so that
    at most MAX_GRID_BINS bins remain. A profile on the grid is its mass per bin; the inner product of two
    profiles is Σ_bins m_a m_b / bin_length, exact when bins are single steps, and for longer runs exact for
    profiles constant within a bin (an EMA profile changes on the scale of σ_rel × t, thousands of steps)."""

    def __init__(self, num_steps: int, max_bins: int = MAX_GRID_BINS):
        self.num_steps = num_steps
        self.bin_steps = max(1, math.ceil((num_steps + 1) / max_bins))
        self.num_bins = math.ceil((num_steps + 1) / self.bin_steps)
        last = (num_steps + 1) - (self.num_bins - 1) * self.bin_steps
        self.bin_lengths = np.full(self.num_bins, float(self.bin_steps))
        self.bin_lengths[-1] = last

    def bin(self, weights: np.ndarray) -> np.ndarray:
        """(num_steps + 1,) weights per step -> (num_bins,) mass per bin."""
        padded = np.zeros(self.num_bins * self.bin_steps)
        padded[:len(weights)] = weights
        return padded.reshape(self.num_bins, self.bin_steps).sum(1)


def power_profile(gamma: float, end_step: int, num_steps: int) -> np.ndarray:
    """(num_steps + 1,) weights of the power EMA taken after step `end_step`: with β_t of EDM2 Eq. 3,
    w_τ = (1 − β_τ) Π_{s>τ} β_s = (τ/t)^(γ+1) − ((τ−1)/t)^(γ+1) for 1 ≤ τ ≤ t (a telescoping product), 0 else."""
    weights = np.zeros(num_steps + 1)
    tau = np.arange(1, end_step + 1, dtype=np.float64)
    weights[1:end_step + 1] = (tau / end_step) ** (gamma + 1) - ((tau - 1) / end_step) ** (gamma + 1)
    return weights


def classic_profile(batch_size: int, end_step: int, num_steps: int, decay: float | None,
                    halflife_kimg: float | None, rampup_ratio: float | None) -> np.ndarray:
    """(num_steps + 1,) weights of the classic EMA after step `end_step` (training/ema.py: the EMA starts as a
    copy of θ_0 and is updated after each step s with β_s = classic_beta at s × batch images):
    w_τ = (1 − β_τ) Π_{s=τ+1}^{t} β_s for τ ≥ 1, and w_0 = Π_{s=1}^{t} β_s."""
    steps = np.arange(1, end_step + 1)
    betas = np.array([classic_beta(batch_size, int(s) * batch_size, decay, halflife_kimg, rampup_ratio)
                      for s in steps])
    with np.errstate(divide="ignore"):
        log_betas = np.log(betas)  # β = 0 (ramp-up at step 1) gives −inf: nothing before it survives
    suffix = np.concatenate([np.cumsum(log_betas[::-1])[::-1][1:], [0.0]])  # Σ_{s>τ} log β_s for τ = 1 … t
    weights = np.zeros(num_steps + 1)
    weights[1:end_step + 1] = (1 - betas) * np.exp(suffix)
    weights[0] = math.exp(log_betas.sum()) if end_step > 0 else 1.0
    return weights


def profile_sigma_rel(weights: np.ndarray) -> float:
    """The relative std of a profile over τ / t (t = its last step with weight): its EMA length."""
    end = int(np.nonzero(weights)[0].max())
    x = np.arange(len(weights)) / end
    mean = float((weights * x).sum() / weights.sum())
    return math.sqrt(float((weights * (x - mean) ** 2).sum() / weights.sum()))


# ----------------------------------------------------------------------------
# Reconstruction (EDM2 §3.3).


def solve_coefficients(snapshot_profiles: np.ndarray, target: np.ndarray, grid: StepGrid) -> tuple[np.ndarray, float]:
    """Least-squares coefficients x (K,) with Σ_k x_k p_k ≈ q in the grid's inner product, rescaled to sum to 1
    (EDM2 normalises the same way: the result must stay an average of weights). Solved with lstsq on the
    profiles themselves rather than the normal equations (whose condition number is the square).
    snapshot_profiles (K, num_bins), target (num_bins,) -> (x (K,), relative residual ‖Σ x_k p_k − q‖ / ‖q‖)."""
    scale = 1 / np.sqrt(grid.bin_lengths)  # (num_bins,)
    design = (snapshot_profiles * scale).T  # (num_bins, K)
    rhs = target * scale  # (num_bins,)
    coefficients, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    coefficients = coefficients / coefficients.sum()
    residual = float(np.linalg.norm(design @ coefficients - rhs) / np.linalg.norm(rhs))
    return coefficients, residual
