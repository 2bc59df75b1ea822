"""Samplers: pure functions of (denoiser, noise, steps). No training imports.

A denoiser is a callable D(x, σ) -> x0 estimate; `guided_denoiser` builds one from a network, labels and a
classifier-free guidance scale.
"""

from typing import Callable

import torch

from diffusion.ddpm_schedule import linear_beta_alphas_cumprod

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


# ----------------------------------------------------------------------------
# DDPM ancestral sampling and DDIM over the VP discretisation of the same EDM denoiser.
# VP ↔ EDM: x_vp = √ᾱ_t · x_edm, σ_t = √((1 − ᾱ_t)/ᾱ_t) (REFERENCE.md §2).


def vp_alphas_cumprod(num_train_steps: int = 1000) -> torch.Tensor:
    """(T,) float64 ᾱ_t of DDPM's linear-β schedule (diffusion/ddpm_schedule.py)."""
    return torch.from_numpy(linear_beta_alphas_cumprod(num_train_steps))


def respaced_timesteps(num_steps: int, num_train_steps: int = 1000) -> torch.Tensor:
    """Evenly spaced t from T−1 down to 0 (num_steps of them). -> (S,) int64, decreasing."""
    return torch.linspace(num_train_steps - 1, 0, num_steps, dtype=torch.float64).round().long()


@torch.no_grad()
def ddim_sample(denoise: Denoiser, noise: torch.Tensor, num_steps: int = 50, num_train_steps: int = 1000,
                clip_denoised: bool = False) -> torch.Tensor:
    """DDIM, η = 0 (Song et al. 2021, Eq. 12). In EDM coordinates the update is x' = D + (σ'/σ)(x − D).
    clip_denoised: clamp x̂0 to [−1, 1] at every step, as DDPM/DDIM's code does for pixel data."""
    abar = vp_alphas_cumprod(num_train_steps).to(noise.device)
    sigmas = ((1 - abar) / abar).sqrt()[respaced_timesteps(num_steps, num_train_steps).to(noise.device)]
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    x = noise.to(torch.float64) * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        d = denoise(x.float(), sigma.float()).to(torch.float64)
        d = d.clamp(-1, 1) if clip_denoised else d
        x = d + (sigma_next / sigma) * (x - d)
    return x.float()


@torch.no_grad()
def ddpm_sample(denoise: Denoiser, noise: torch.Tensor, num_steps: int = 1000, num_train_steps: int = 1000,
                randn_like: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like,
                clip_denoised: bool = False) -> torch.Tensor:
    """Ancestral sampling with the posterior q(x_{t−1} | x_t, x0) (Ho et al. 2020, Eqs. 6-7) on respaced steps.
    clip_denoised: clamp x̂0 to [−1, 1] before the posterior mean, as Ho et al.'s code does (pixel data only:
    latents are not bounded)."""
    abar_all = vp_alphas_cumprod(num_train_steps).to(noise.device)
    abar = abar_all[respaced_timesteps(num_steps, num_train_steps).to(noise.device)]  # (S,) decreasing noise
    x_vp = noise.to(torch.float64) * (1 - abar[0]).sqrt()  # ≈ N(0, I) at t = T−1
    for i in range(num_steps):
        abar_t = abar[i]
        abar_prev = abar[i + 1] if i + 1 < num_steps else abar.new_ones(())
        sigma = ((1 - abar_t) / abar_t).sqrt()
        x0 = denoise((x_vp / abar_t.sqrt()).float(), sigma.float()).to(torch.float64)
        x0 = x0.clamp(-1, 1) if clip_denoised else x0
        if i + 1 == num_steps:
            return x0.float()
        alpha_t = abar_t / abar_prev
        beta_t = 1 - alpha_t
        # Posterior mean μ̃ = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t, variance β̃ = β_t(1−ᾱ_{t−1})/(1−ᾱ_t).
        mean = (abar_prev.sqrt() * beta_t / (1 - abar_t)) * x0 + (alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)) * x_vp
        var = beta_t * (1 - abar_prev) / (1 - abar_t)
        x_vp = mean + var.sqrt() * randn_like(x_vp)
    return x_vp.float()


class SeededRandn:
    """One generator per image seed, so every draw for image i depends only on seed i (EDM's
    StackedRandomGenerator): outputs do not depend on batch composition or the number of processes."""

    def __init__(self, seeds: list[int], device):
        self.device = device
        self.generators = [torch.Generator(device).manual_seed(int(s) % (1 << 32)) for s in seeds]

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(tuple(x.shape[1:])).to(x.dtype)


def limited_guidance(net, labels: torch.Tensor | None, cfg_scale: float, null_label: int | None,
                     sigma_lo: float, sigma_hi: float) -> Denoiser:
    """Guidance applied only for σ in [sigma_lo, sigma_hi] (Kynkäänniemi et al. 2024); unguided elsewhere."""
    guided = guided_denoiser(net, labels, cfg_scale, null_label)
    plain = guided_denoiser(net, labels, 1.0, null_label)
    return lambda x, sigma: guided(x, sigma) if sigma_lo <= float(sigma) <= sigma_hi else plain(x, sigma)


def run_sampler(opts, denoise: Denoiser, noise: torch.Tensor, randn: SeededRandn) -> torch.Tensor:
    """Dispatch by opts.sampler (diffusion/generation.py's SamplingOptions): edm (Heun), euler (EDM Euler), ddim,
    ddpm (clip_denoised: ddim and ddpm only)."""
    name, num_steps, clip_denoised = opts.sampler, opts.num_steps, opts.clip_denoised
    if name in ("edm", "euler"):
        return edm_sample(denoise, noise, num_steps=num_steps, heun=name == "edm", s_churn=opts.s_churn,
                          s_tmin=opts.s_tmin, s_tmax=float("inf") if opts.s_tmax is None else opts.s_tmax,
                          s_noise=opts.s_noise, randn_like=randn.randn_like)
    if name == "ddim":
        return ddim_sample(denoise, noise, num_steps=num_steps, clip_denoised=clip_denoised)
    if name == "ddpm":
        return ddpm_sample(denoise, noise, num_steps=num_steps, randn_like=randn.randn_like, clip_denoised=clip_denoised)
    raise ValueError(f"unknown sampler {name!r}; choose edm | euler | ddim | ddpm")
