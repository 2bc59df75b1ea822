"""DDPM's discrete schedule expressed in EDM σ: the one home of the linear-β table (a leaf module).

Linear β from 1e-4 to 0.02 over T = 1000 (Ho et al. 2020), t 0-indexed. ᾱ_t = Π_{i≤t}(1 − β_i),
σ_t = √((1 − ᾱ_t)/ᾱ_t), SNR_t = 1/σ_t², and x_EDM = x_t/√ᾱ_t = y + σ_t ε. Used by the DDPM-family strategies,
the VP preconditioning and the DDPM/DDIM samplers.
"""

import numpy as np
import torch


def linear_beta_alphas_cumprod(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """ᾱ_t = Π_{i≤t}(1 − β_i) with β linear from beta_start to beta_end (Ho et al. 2020 §4). -> (T,) float64."""
    betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def fractional_timestep(sigma: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N,) σ -> (N,) float32 t, linear in σ between entries of the increasing σ_t `table` (T,): exact integers on
    the schedule, continuous between them (EDM samplers), clamped to [0, T−1] outside it."""
    table = table.to(sigma.device)  # a no-op when the caller keeps the table on the device
    s = sigma.double().clamp(table[0], table[-1])
    idx = torch.searchsorted(table, s).clamp(1, len(table) - 1)
    frac = (s - table[idx - 1]) / (table[idx] - table[idx - 1])
    return (idx - 1 + frac).float()


class DDPMSchedule:
    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = num_steps
        self.alphas_cumprod = linear_beta_alphas_cumprod(num_steps, beta_start, beta_end)  # ᾱ_t
        self.sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)  # σ_t, increasing in t
        self.sigma_table = torch.from_numpy(self.sigmas)  # (T,) float64; `to` moves it once

    def to(self, device) -> "DDPMSchedule":
        self.sigma_table = self.sigma_table.to(device)
        return self

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) integer t -> (N,) float32 σ_t."""
        return self.sigma_table.to(t.device)[t].float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) σ -> (N,) nearest t on the schedule (exact for σ drawn from it)."""
        table = self.sigma_table.to(sigma.device)
        idx = torch.searchsorted(table, sigma.double()).clamp(1, self.num_steps - 1)
        left_closer = (sigma.double() - table[idx - 1]).abs() <= (table[idx] - sigma.double()).abs()
        return torch.where(left_closer, idx - 1, idx)

    def fractional_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return fractional_timestep(sigma, self.sigma_table)
