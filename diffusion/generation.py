"""Seeded class-conditional generation: per-image seeds and labels, so an image depends only on its seed."""

from dataclasses import dataclass
from typing import Iterator

import torch

from diffusion.samplers import SeededRandn, guided_denoiser, limited_guidance, run_sampler


@dataclass
class SamplingOptions:
    sampler: str = "edm"  # edm | euler | ddim | ddpm
    num_steps: int = 40
    cfg_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None  # (σ_lo, σ_hi): guide only inside
    s_churn: float = 0.0
    clip_denoised: bool = False  # ddim / ddpm: clamp x̂0 to [−1, 1] each step (pixel models only)


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
    return run_sampler(opts.sampler, denoise, noise, opts.num_steps, randn, opts.s_churn, opts.clip_denoised)


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
