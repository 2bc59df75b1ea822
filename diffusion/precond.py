"""Preconditioning (Karras et al. 2022, Table 1): D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)).

EDMPrecond is the EDM column (MaskDiT's choice); VPPrecond is the VP column on DDPM's discrete schedule, i.e.
a plain ε-prediction network, for the classic DDPM baseline.
"""

import torch
from torch import nn

from diffusion.ddpm_schedule import DDPMSchedule, fractional_timestep
from models.maskdit import BlockTokens
from models.masking import TokenMask


class EDMPrecond(nn.Module):
    """Owns σ, the EDM scalings and dtype casts; the backbone only sees c_in·x and c_noise."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = sigma_data

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """σ (N,) float32 -> c_skip, c_out, c_in, c_noise, each (N,)."""
        sd = self.sigma_data
        # EDM Table 1 / MaskDiT §3: c_skip = σd²/(σ²+σd²), c_out = σσd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ln(σ)/4.
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None,
                mask: TokenMask | None = None, route_noise: torch.Tensor | None = None,
                repr_block: int | None = None) -> torch.Tensor | tuple[torch.Tensor, BlockTokens]:
        """x (N, C, H, W) noisy input, σ (N,) or scalar -> denoised D (N, C, H, W) in float32; with `repr_block`
        (transformer backbones) -> (D, that encoder block's output tokens, models/maskdit.py BlockTokens).
        mask / route_noise: the training step's token masking and routing draws (the backbone's business)."""
        x = x.float()
        sigma = sigma.float().reshape(-1).expand(x.shape[0])  # (N,)
        c_skip, c_out, c_in, c_noise = (s[:, None, None, None] for s in self.scalings(sigma))  # (N, 1, 1, 1)
        token_draws = (mask,) if route_noise is None else (mask, route_noise)  # the U-Net takes no route
        if repr_block is None:
            f = self.backbone(c_in * x, c_noise.flatten(), labels, *token_draws)  # (N, C, H, W)
            return c_skip * x + c_out * f.float()
        f, block_out = self.backbone(c_in * x, c_noise.flatten(), labels, mask, route_noise, repr_block)
        return c_skip * x + c_out * f.float(), block_out

    def block_tokens(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None,
                     block: int) -> torch.Tensor:
        """x (N, C, H, W) noisy input, σ (N,) -> the output of encoder block `block` on every token (N, L, D),
        with this preconditioning's input scaling and noise conditioning (transformer backbones)."""
        x = x.float()
        sigma = sigma.float().reshape(-1).expand(x.shape[0])  # (N,)
        _, _, c_in, c_noise = self.scalings(sigma)  # (N,) each
        return self.backbone.encode_to(c_in[:, None, None, None] * x, c_noise, labels, block)


class VPPrecond(EDMPrecond):
    """ε-prediction: D = x − σ·F(x/√(σ²+1); t(σ)), with t the (fractional) DDPM step of σ on the linear-β schedule.

    With the ddpm_uniform strategy (x0-space weight 1/σ²) the loss λ||D − y||² equals DDPM's ||ε − F||²:
    D − y = σ(ε − F)."""

    def __init__(self, backbone: nn.Module, num_train_steps: int = 1000):
        super().__init__(backbone, sigma_data=1.0)
        # σ_t table as a buffer: it moves with the module, so no step copies it from the host
        self.register_buffer("ddpm_sigmas", DDPMSchedule(num_train_steps).sigma_table, persistent=False)  # (T,)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # EDM Table 1, VP column: c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = t(σ) (discrete: the DDPM step).
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1).sqrt()
        c_noise = fractional_timestep(sigma, self.ddpm_sigmas)
        return c_skip, c_out, c_in, c_noise
