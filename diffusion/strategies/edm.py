"""EDM log-normal σ sampling with the EDM weight: the MaskDiT baseline."""

import torch

from diffusion.strategies.base import NoiseLevelStrategy, edm_weight, lognormal_sigma
from diffusion.strategies.params import POSITIVE


class EDMLogNormal(NoiseLevelStrategy):
    """ln σ ~ N(P_mean, P_std²), λ(σ) = (σ²+σ_d²)/(σσ_d)² (EDM Table 1; MaskDiT uses P_mean −1.2, P_std 1.2)."""

    name = "edm"
    PARAM_RANGES = {"p_std": POSITIVE}

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5):
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def sample_sigma(self, batch: int, device, generator=None) -> torch.Tensor:
        return lognormal_sigma(batch, device, self.p_mean, self.p_std, generator)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_weight(sigma, self.sigma_data)
