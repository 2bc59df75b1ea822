"""Min-SNR-γ, SD3 logit-normal and Laplace-on-log-SNR, in EDM σ."""

import torch

from diffusion.strategies.base import NoiseLevelStrategy, edm_weight, lognormal_sigma, min_snr_weight
from diffusion.ddpm_schedule import DDPMSchedule
from diffusion.strategies.params import POSITIVE, Range


class MinSNR(NoiseLevelStrategy):
    """Min-SNR-γ (Hang et al., ICCV 2023): x0-space weight min(SNR, γ) = min(1/σ², γ); soft: 1/(σ² + 1/γ).

    σ comes from the EDM log-normal (`sampling: edm`) or DDPM's uniform t (`sampling: ddpm_uniform`, the
    paper's setting). Not SpeeD's baseline code, which computes 5·(1 − ᾱ) by mistake.
    """

    name = "min_snr"
    PARAM_RANGES = {"gamma": POSITIVE, "sampling": Range(choices=("edm", "ddpm_uniform")), "p_std": POSITIVE}

    def __init__(self, gamma: float = 5.0, soft: bool = False, sampling: str = "edm", p_mean: float = -1.2,
                 p_std: float = 1.2, sigma_data: float = 0.5):
        if sampling not in ("edm", "ddpm_uniform"):
            raise ValueError(f"sampling must be edm or ddpm_uniform, not {sampling!r}")
        self.gamma, self.soft, self.sampling, self.p_mean, self.p_std = gamma, soft, sampling, p_mean, p_std
        self.schedule = DDPMSchedule() if sampling == "ddpm_uniform" else None

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        if self.schedule is not None:
            t = torch.randint(0, self.schedule.num_steps, (batch,), device=device, generator=generator)
            return self.schedule.sigma(t)
        return lognormal_sigma(batch, device, self.p_mean, self.p_std, generator)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.soft:
            return 1.0 / (sigma.square() + 1.0 / self.gamma)
        return min_snr_weight(sigma, self.gamma)


class LogitNormal(NoiseLevelStrategy):
    """SD3 (Esser et al. 2024): rectified-flow t = sigmoid(m + s·n). With σ = t/(1 − t), ln σ = m + s·n: exactly
    the EDM log-normal with P_mean = m, P_std = s. The v-MSE becomes the x0-space weight 1/t² = (1 + σ)²/σ²."""

    name = "logit_normal"
    PARAM_RANGES = {"s": POSITIVE}

    def __init__(self, m: float = 0.0, s: float = 1.0, sigma_data: float = 0.5):
        self.m, self.s = m, s

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        t = torch.sigmoid(torch.randn(batch, device=device, generator=generator) * self.s + self.m)
        return t / (1 - t)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 + sigma).square() / sigma.square()


class LaplaceLogSNR(NoiseLevelStrategy):
    """Hang et al. 2024: log-SNR λ = −2 ln σ ~ Laplace(μ, b), defaults μ = 0, b = 0.5; EDM weight kept
    (the method changes only where training samples)."""

    name = "laplace"
    PARAM_RANGES = {"b": POSITIVE}

    def __init__(self, mu: float = 0.0, b: float = 0.5, sigma_data: float = 0.5):
        self.mu, self.b, self.sigma_data = mu, b, sigma_data

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        # Inverse CDF: λ = μ − b·sgn(u − ½)·ln(1 − 2|u − ½|), u ~ U(0, 1).
        u = torch.rand(batch, device=device, dtype=torch.float64, generator=generator).clamp(1e-12, 1 - 1e-12) - 0.5
        log_snr = self.mu - self.b * torch.sign(u) * torch.log1p(-2 * u.abs())
        return torch.exp(-0.5 * log_snr).float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_weight(sigma, self.sigma_data)


def laplace_density_log_sigma(log_sigma: torch.Tensor, mu: float, b: float) -> torch.Tensor:
    """Density of ln σ when λ = −2 ln σ ~ Laplace(μ, b): p(ln σ) = 2·exp(−|−2 ln σ − μ|/b)/(2b)."""
    return torch.exp(-(-2 * log_sigma - mu).abs() / b) / b


