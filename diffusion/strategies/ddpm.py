"""The DDPM-family strategies: integer timesteps on DDPM's schedule (diffusion/ddpm_schedule.py).

An ε-MSE weight w_ε becomes the x0-space weight w_ε·SNR = w_ε/σ² (REFERENCE.md §2).
"""

import numpy as np
import torch

from diffusion.ddpm_schedule import DDPMSchedule
from diffusion.strategies.base import NoiseLevelStrategy
from diffusion.strategies.params import AT_LEAST_TWO, NON_NEGATIVE, POSITIVE


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
    PARAM_RANGES = {"num_steps": AT_LEAST_TWO}

    def __init__(self, num_steps: int = 1000, sigma_data: float = 0.5):
        schedule = DDPMSchedule(num_steps)
        super().__init__(np.ones(num_steps), np.ones(num_steps), schedule)


class P2Weighting(TimestepStrategy):
    """P2 (Choi et al. 2022): uniform t, ε-MSE weight 1/(k + SNR_t)^γ (defaults k = 1, γ = 1)."""

    name = "p2"
    PARAM_RANGES = {"k": POSITIVE, "gamma": NON_NEGATIVE, "num_steps": AT_LEAST_TWO}

    def __init__(self, k: float = 1.0, gamma: float = 1.0, num_steps: int = 1000, sigma_data: float = 0.5):
        schedule = DDPMSchedule(num_steps)
        snr = 1.0 / schedule.sigmas**2
        super().__init__(np.ones(num_steps), 1.0 / (k + snr) ** gamma, schedule)
