"""Seeded class-conditional generation: per-image seeds and labels, so an image depends only on its seed."""

from dataclasses import dataclass
from typing import Iterator

import torch

from diffusion.samplers import SeededRandn, guided_denoiser, limited_guidance, run_sampler


SAMPLERS = ("edm", "euler", "ddim", "ddpm")
DEFAULT_STEPS = {"edm": 40, "euler": 40, "ddim": 50, "ddpm": 1000}


@dataclass
class SamplingOptions:
    """How to sample: the one schema behind generate.py's flags, the evaluation config's `sampling:` and the
    training config's `grid.sampling:` (both nest it, so a key means the same everywhere)."""

    sampler: str = "edm"  # edm (Heun) | euler | ddim | ddpm
    num_steps: int = 40
    cfg_scale: float = 1.0  # classifier-free guidance; 1 = unguided
    guidance_sigma_lo: float | None = None  # guide only for σ in [lo, hi] when both are set
    guidance_sigma_hi: float | None = None
    s_churn: float = 0.0  # EDM stochasticity: EDM Algorithm 2's S_churn (edm / euler; ddim and ddpm ignore it)
    s_tmin: float = 0.0  # churn only for σ in [s_tmin, s_tmax] (EDM's S_tmin / S_tmax; null = no upper bound)
    s_tmax: float | None = None
    s_noise: float = 1.0  # EDM's S_noise: the std of the churn's added noise, relative to the exact 1
    clip_denoised: bool = False  # ddim / ddpm: clamp x̂0 to [−1, 1] each step (pixel models only; Ho et al.'s code)

    @property
    def guidance_interval(self) -> tuple[float, float] | None:
        if self.guidance_sigma_lo is None:
            return None
        return self.guidance_sigma_lo, self.guidance_sigma_hi

    def problem(self) -> str | None:
        """What is wrong with these options (names the key), or None."""
        if self.sampler not in SAMPLERS:
            return f"sampler: {self.sampler!r} is not one of {' | '.join(SAMPLERS)}"
        if self.num_steps <= 0:
            return f"num_steps: must be positive (got {self.num_steps})"
        if (self.guidance_sigma_lo is None) != (self.guidance_sigma_hi is None):
            return "guidance_sigma_lo and guidance_sigma_hi go together"
        if self.s_churn < 0 or self.s_noise <= 0:
            return f"s_churn must be ≥ 0 and s_noise > 0 (got {self.s_churn}, {self.s_noise})"
        if self.s_tmax is not None and self.s_tmin > self.s_tmax:
            return f"s_tmin ({self.s_tmin}) is above s_tmax ({self.s_tmax})"
        if self.clip_denoised and self.sampler not in ("ddim", "ddpm"):
            return f"clip_denoised: only the ddim and ddpm samplers clip x̂0 (sampler is {self.sampler})"
        return None


def labels_for_seeds(seeds: list[int], num_classes: int, fixed_class: int | None = None) -> torch.Tensor | None:
    """Class-balanced by default: label = seed mod num_classes; None for unconditional models."""
    if not num_classes:
        return None
    if fixed_class is not None:
        if not 0 <= fixed_class < num_classes:
            raise ValueError(f"--class {fixed_class} is outside [0, {num_classes})")
        return torch.full((len(seeds),), fixed_class, dtype=torch.long)
    return torch.tensor([s % num_classes for s in seeds], dtype=torch.long)


@torch.no_grad()
def sample_batch(net, seeds: list[int], labels: torch.Tensor | None, shape: tuple[int, int, int],
                 opts: SamplingOptions, device) -> torch.Tensor:
    """-> (N, C, H, W) float samples in the model's space (pixels or latents)."""
    randn = SeededRandn(seeds, device)
    noise = randn.randn(shape)
    num_classes = net.backbone.spec.num_classes
    labels = labels.to(device) if labels is not None else None
    null = num_classes if num_classes else None
    if opts.guidance_interval is not None:
        denoise = limited_guidance(net, labels, opts.cfg_scale, null, *opts.guidance_interval)
    else:
        denoise = guided_denoiser(net, labels, opts.cfg_scale, null)
    return run_sampler(opts, denoise, noise, randn)


def generate(net, decoder, seeds: list[int], labels: torch.Tensor | None, opts: SamplingOptions, batch_size: int,
             device) -> Iterator[tuple[list[int], torch.Tensor | None, torch.Tensor]]:
    """Yield (seeds, labels, images in [-1, 1]) batch by batch."""
    spec = net.backbone.spec
    shape = (spec.in_channels, spec.resolution, spec.resolution)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        chunk_labels = labels[start:start + batch_size] if labels is not None else None
        samples = sample_batch(net, chunk, chunk_labels, shape, opts, device)
        yield chunk, chunk_labels, decoder(samples)
