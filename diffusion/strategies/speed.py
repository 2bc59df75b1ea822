"""SpeeD (Wang et al., arXiv 2405.17403; class Speed_IDDPM in NUS-HPC-AI-Lab/SpeeD), on EDM σ.

Asymmetric sampling p(t) ∝ k for t < τ, 1 for t ≥ τ, with "dual" reflected copies around the
meaningful-step boundary ms, and change-aware ε-space weights w_t from the finite-difference gradient of
1 − ᾱ_t, rescaled to [1 − λ, λ] below τ and 1 above. Defaults k = 5, τ = 700, λ = 0.6 (the reference
class defaults k = 1, λ = 5 give negative weights, so they are not used).
"""

import numpy as np
import torch

from diffusion.strategies.base import NoiseLevelStrategy, edm_weight
from diffusion.ddpm_schedule import DDPMSchedule
from diffusion.strategies.ddpm import TimestepStrategy
from diffusion.strategies.params import AT_LEAST_TWO, NON_NEGATIVE, POSITIVE, UNIT


def meaningful_steps(schedule: DDPMSchedule) -> int:
    """ms = first t where the finite-difference gradient of √(1 − ᾱ_t) drops below 1e-4, plus one (642)."""
    grad = np.gradient(np.sqrt(1.0 - schedule.alphas_cumprod))
    return int(np.argmax(grad < 1e-4)) + 1


def change_aware_weights(schedule: DDPMSchedule, tau: int, lam: float) -> np.ndarray:
    """SpeeD Eq. (weighting): g_t = d(1 − ᾱ_t)/dt; w_t = k_w + (1 − 2k_w)·(g_t − min g)/(max g − min g), k_w = 1 − λ,
    for t < τ; w_t = 1 for t ≥ τ. The min/max run over all T steps, as in the reference."""
    g = np.gradient(1.0 - schedule.alphas_cumprod)
    k_w = 1.0 - lam
    w = k_w + (1.0 - 2.0 * k_w) * (g - g.min()) / (g.max() - g.min())
    w[tau:] = 1.0
    return w


class SpeeD(TimestepStrategy):
    """Faithful port: integer t with dual sampling; ε-weight w_t becomes the x0-space weight w_t/σ_t²."""

    name = "speed"
    # λ ∈ [0, 1] keeps the weights w_t ∈ [1 − λ, λ] non-negative
    PARAM_RANGES = {"k": POSITIVE, "tau": NON_NEGATIVE, "lam": UNIT, "num_steps": AT_LEAST_TWO}

    def __init__(self, k: float = 5.0, tau: int = 700, lam: float = 0.6, dual: bool = True, num_steps: int = 1000,
                 sigma_data: float = 0.5):
        schedule = DDPMSchedule(num_steps)
        probs = np.where(np.arange(num_steps) < tau, k, 1.0)
        super().__init__(probs, change_aware_weights(schedule, tau, lam), schedule)
        self.tau, self.dual, self.ms = tau, dual, meaningful_steps(schedule)
        self.tau_sigma = float(schedule.sigmas[tau - 1])  # t < τ ⇔ σ ≤ σ_{τ−1} ≈ 11.94

    def sample_timesteps(self, batch: int, device, generator=None) -> torch.Tensor:
        if not self.dual:
            return super().sample_timesteps(batch, device, generator)
        # Draw ⌊B/2⌋+1, reflect t' = ms − t (t < ms) or t − ms (t ≥ ms), keep the first B.
        t = super().sample_timesteps(batch // 2 + 1, device, generator)
        mirrored = torch.where(t < self.ms, self.ms - t, t - self.ms)
        return torch.cat([t, mirrored])[:batch]


class SpeeDEDM(NoiseLevelStrategy):
    """EDM-relative SpeeD: the EDM log-normal density multiplied by k below σ_τ (renormalised), and the EDM
    weight multiplied by SpeeD's change-aware factor at the nearest DDPM step. Keeps EDM's parametrisation,
    transfers SpeeD's two ideas (fewer samples in the convergence area σ ≥ σ_τ, change-aware weights)."""

    name = "speed_edm"
    PARAM_RANGES = {"k": POSITIVE, "tau": NON_NEGATIVE, "lam": UNIT, "p_std": POSITIVE}

    def __init__(self, k: float = 5.0, tau: int = 700, lam: float = 0.6, p_mean: float = -1.2, p_std: float = 1.2,
                 sigma_data: float = 0.5):
        self.schedule = DDPMSchedule()
        self.k, self.p_mean, self.p_std, self.sigma_data = k, p_mean, p_std, sigma_data
        self.tau_sigma = float(self.schedule.sigmas[tau - 1])  # last σ of the acceleration area (≈ 11.94)
        self.log_sigma_tau = float(np.log(self.tau_sigma))
        self.w_t = torch.from_numpy(change_aware_weights(self.schedule, tau, lam)).float()
        normal = torch.distributions.Normal(torch.tensor(p_mean, dtype=torch.float64),
                                            torch.tensor(p_std, dtype=torch.float64))
        self.cdf_tau = normal.cdf(torch.tensor(self.log_sigma_tau, dtype=torch.float64))  # P_p(σ ≤ σ_τ), 0-d
        # mass of the part below σ_τ once it is multiplied by k and renormalised
        self.below_mass = self.k * self.cdf_tau / (self.k * self.cdf_tau + (1 - self.cdf_tau))  # 0-d float64

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        below = torch.rand(batch, device=device, dtype=torch.float64, generator=generator) < self.below_mass.to(device)
        u = torch.rand(batch, device=device, dtype=torch.float64, generator=generator)
        cdf_tau = self.cdf_tau.to(device)
        u = torch.where(below, u * cdf_tau, cdf_tau + u * (1 - cdf_tau))  # inverse CDF of the truncated part
        return (self.p_mean + self.p_std * torch.special.ndtri(u)).exp().float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        t = self.schedule.timestep(sigma)
        return edm_weight(sigma, self.sigma_data) * self.w_t.to(sigma.device)[t]
