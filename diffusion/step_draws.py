"""All random draws of one optimizer step, made for the whole global batch and then sliced.

Every process draws the same global tensors from a generator seeded by (seed, step) and keeps the slice of
its samples, in the order the data stream lays out a step: accumulation round, then rank, then sample.
Training randomness therefore does not depend on the number of processes or accumulation rounds: one
process with batch 16 and two processes with batch 8 each train on identical σ, noise, masks and label
drops. Drawing the global batch costs each rank a few MB of random numbers per step.
"""

from dataclasses import dataclass, fields

import torch


@dataclass
class Draws:
    sigma: torch.Tensor  # (N,) noise levels from the strategy
    noise: torch.Tensor  # (N, C, H, W) standard normal
    mask_noise: torch.Tensor  # (N, L) uniform, argsorted into token masks
    label_drop: torch.Tensor  # (N,) bool, True = replace the label by the null label
    # latent data only (None for pixels): the posterior re-draw z = mean + std·ε and the stored copy to use
    latent_noise: torch.Tensor | None = None  # (N, C, h, w) standard normal ε
    copy_choice: torch.Tensor | None = None  # (N,) uniform [0, 1): plain or flipped copy (shard reader)
    route_noise: torch.Tensor | None = None  # (N, L) uniform: TREAD's token routing (None when routing is off)
    teacher_shift: torch.Tensor | None = None  # (N,) uniform: SRA's teacher time shift (None when SRA is off)

    def slice(self, start: int, count: int) -> "Draws":
        parts = (getattr(self, f.name) for f in fields(self))
        return Draws(*(None if t is None else t[start:start + count] for t in parts))


def step_generator(seed: int, step: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (1 << 63))


def draw_step(strategy, generator: torch.Generator, batch_size: int, sample_shape: tuple[int, ...],
              num_tokens: int, label_dropout: float, device, latent: bool = False, route: bool = False,
              teacher: bool = False) -> Draws:
    """The global batch's draws for one optimizer step (batch_size = global batch). `latent`: also the
    posterior ε and copy choice of latent data; `route`: also the token-routing noise; `teacher`: also the time
    shift of self-representation alignment's teacher (diffusion/self_alignment.py).

    σ is drawn last: strategies consume different amounts of random numbers (SpeeD's dual reflection, an
    adaptive proposal), and drawing them last keeps the noise, masks, label drops and latent draws of a seed
    identical for every strategy, which is what a paired comparison of strategies needs."""
    noise = torch.randn((batch_size, *sample_shape), device=device, generator=generator)  # (B, C, H, W)
    mask_noise = torch.rand((batch_size, num_tokens), device=device, generator=generator)  # (B, L)
    label_drop = torch.rand(batch_size, device=device, generator=generator) < label_dropout  # (B,)
    latent_noise = copy_choice = None
    if latent:
        latent_noise = torch.randn((batch_size, *sample_shape), device=device, generator=generator)  # (B, C, h, w)
        copy_choice = torch.rand(batch_size, device=device, generator=generator)  # (B,)
    sigma = strategy.sample_sigma(batch_size, device, generator)  # (B,)
    # Routing draws come after σ, so a routed row shares every other draw with its unrouted twin.
    route_noise = torch.rand((batch_size, num_tokens), device=device, generator=generator) if route else None  # (B, L)
    # last of all, so a run with SRA shares every other draw with its twin without it (and routing's with SRA's)
    teacher_shift = torch.rand(batch_size, device=device, generator=generator) if teacher else None  # (B,)
    return Draws(sigma, noise, mask_noise, label_drop, latent_noise, copy_choice, route_noise, teacher_shift)


def micro_batch_offset(round_idx: int, rank: int, num_ranks: int, batch_gpu: int) -> int:
    """Index of this process's first sample of accumulation round `round_idx` in the global batch."""
    return (round_idx * num_ranks + rank) * batch_gpu
