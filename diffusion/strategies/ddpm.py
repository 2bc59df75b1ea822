"""DDPM's discrete schedule expressed in EDM σ, and the strategies that draw integer timesteps.

Linear β from 1e-4 to 0.02 over T = 1000 (Ho et al. 2020), t 0-indexed. ᾱ_t = Π_{i≤t}(1 − β_i),
σ_t = √((1 − ᾱ_t)/ᾱ_t), SNR_t = 1/σ_t², and x_EDM = x_t/√ᾱ_t = y + σ_t ε. An ε-MSE weight w_ε becomes
the x0-space weight w_ε·SNR = w_ε/σ² (REFERENCE.md §2).
"""

import numpy as np
import torch

from diffusion.strategies.base import NoiseLevelStrategy


class DDPMSchedule:
    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = num_steps
        self.betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # ᾱ_t
        self.sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)  # σ_t, increasing in t
        self._sigmas_t = torch.from_numpy(self.sigmas)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) integer t -> (N,) float32 σ_t."""
        return self._sigmas_t.to(t.device)[t].float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) σ -> (N,) nearest t on the schedule (exact for σ drawn from it)."""
        table = self._sigmas_t.to(sigma.device)
        idx = torch.searchsorted(table, sigma.double()).clamp(1, self.num_steps - 1)
        left_closer = (sigma.double() - table[idx - 1]).abs() <= (table[idx] - sigma.double()).abs()
        return torch.where(left_closer, idx - 1, idx)

    def fractional_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) σ -> (N,) float32 t, linear in σ between table entries: exact integers on the schedule,
        continuous between them (EDM samplers), clamped to [0, T−1] outside it."""
        table = self._sigmas_t.to(sigma.device)
        s = sigma.double().clamp(table[0], table[-1])
        idx = torch.searchsorted(table, s).clamp(1, self.num_steps - 1)
        frac = (s - table[idx - 1]) / (table[idx] - table[idx - 1])
        return (idx - 1 + frac).float()


def eps_to_x0_weight(w_eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0-space weight of an ε-MSE weight: w_x0 = w_ε·SNR = w_ε/σ²."""
    return w_eps / sigma.square()


class TimestepStrategy(NoiseLevelStrategy):
    """Draws integer t from a table of probabilities; ε-space weights per t from a table."""

    def __init__(self, probs: np.ndarray, eps_weights: np.ndarray, schedule: DDPMSchedule):
        self.schedule = schedule
        self.probs = torch.from_numpy(probs / probs.sum()).float()
        self.eps_weights = torch.from_numpy(eps_weights).float()

    def sample_timesteps(self, batch: int, device, generator=None) -> torch.Tensor:
        return torch.multinomial(self.probs.to(device), batch, replacement=True, generator=generator)

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        return self.schedule.sigma(self.sample_timesteps(batch, device, generator))

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        t = self.schedule.timestep(sigma)
        return eps_to_x0_weight(self.eps_weights.to(sigma.device)[t], sigma)


class DDPMUniform(TimestepStrategy):
    """t ~ U{0, …, T−1} with the plain ε-MSE (Ho et al. 2020): the classic baseline."""

    name = "ddpm_uniform"

    def __init__(self, num_steps: int = 1000, sigma_data: float = 0.5):
        schedule = DDPMSchedule(num_steps)
        super().__init__(np.ones(num_steps), np.ones(num_steps), schedule)


class P2Weighting(TimestepStrategy):
    """P2 (Choi et al. 2022): uniform t, ε-MSE weight 1/(k + SNR_t)^γ (defaults k = 1, γ = 1)."""

    name = "p2"

    def __init__(self, k: float = 1.0, gamma: float = 1.0, num_steps: int = 1000, sigma_data: float = 0.5):
        schedule = DDPMSchedule(num_steps)
        snr = 1.0 / schedule.sigmas**2
        super().__init__(np.ones(num_steps), 1.0 / (k + snr) ** gamma, schedule)
