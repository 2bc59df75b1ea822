"""Samplers: pure functions of (denoiser, noise, steps). No training imports.

A denoiser is a callable D(x, σ) -> x0 estimate; `guided_denoiser` builds one from a network, labels and a
classifier-free guidance scale.
"""

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_denoiser(net, labels: torch.Tensor | None, cfg_scale: float, null_label: int | None) -> Denoiser:
    """D_cfg = D(x|∅) + s·(D(x|c) − D(x|∅)) (Ho & Salimans 2022), on all channels; s = 1 is unguided."""
    if labels is None or cfg_scale == 1.0:
        return lambda x, sigma: net(x, sigma.expand(x.shape[0]), labels)
    if null_label is None:
        raise ValueError("classifier-free guidance needs a class-conditional model with a null label")
    both = torch.cat([labels, torch.full_like(labels, null_label)])  # (2N,)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d_cond, d_uncond = net(torch.cat([x, x]), sigma.expand(2 * x.shape[0]), both).chunk(2)  # 2 x (N, C, H, W)
        return d_uncond + cfg_scale * (d_cond - d_uncond)

    return denoise


def edm_sigma_steps(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                    device=None) -> torch.Tensor:
    """EDM Eq. 5: σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then σ_N = 0. -> (N+1,) float64."""
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    sigmas = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros_like(sigmas[:1])])


@torch.no_grad()
def edm_sample(denoise: Denoiser, noise: torch.Tensor, num_steps: int = 40, sigma_min: float = 0.002,
               sigma_max: float = 80.0, rho: float = 7.0, heun: bool = True, s_churn: float = 0.0,
               s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
               randn_like: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like) -> torch.Tensor:
    """EDM Algorithm 2 (stochastic when s_churn > 0; Heun's 2nd-order correction unless heun=False).

    noise (N, C, H, W) ~ N(0, I) -> samples (N, C, H, W) float32. 40 Heun steps = 79 network evaluations.
    """
    sigmas = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, device=noise.device)
    x_next = noise.to(torch.float64) * sigmas[0]
    for i, (sigma_cur, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        x_cur = x_next
        # Churn: temporarily raise the noise level to σ̂ = σ + γσ (Alg. 2 lines 4-6).
        gamma = min(s_churn / num_steps, 2**0.5 - 1) if s_tmin <= sigma_cur <= s_tmax else 0.0
        sigma_hat = sigma_cur * (1 + gamma)
        x_hat = x_cur
        if gamma > 0:  # draw no noise otherwise, so deterministic sampling consumes no RNG state
            x_hat = x_cur + (sigma_hat**2 - sigma_cur**2).sqrt() * s_noise * randn_like(x_cur)
        # Euler step on dx/dσ = (x − D(x; σ))/σ (Alg. 2 lines 7-8).
        d_cur = (x_hat - denoise(x_hat.float(), sigma_hat.float()).to(torch.float64)) / sigma_hat
        x_next = x_hat + (sigma_next - sigma_hat) * d_cur
        # Heun correction (Alg. 2 lines 9-11), skipped on the last step to σ = 0.
        if heun and i < num_steps - 1:
            d_prime = (x_next - denoise(x_next.float(), sigma_next.float()).to(torch.float64)) / sigma_next
            x_next = x_hat + (sigma_next - sigma_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.float()
