"""All random draws of one optimizer step, made for the whole global batch and then sliced.

Every process draws the same global tensors from a generator seeded by (seed, step) and keeps the slice of
its samples, in the order the data stream lays out a step: accumulation round, then rank, then sample.
Training randomness therefore does not depend on the number of processes or accumulation rounds: one
process with batch 16 and two processes with batch 8 each train on identical σ, noise, masks and label
drops. Drawing the global batch costs each rank a few MB of random numbers per step.
"""

from dataclasses import dataclass

import torch


@dataclass
class Draws:
    sigma: torch.Tensor  # (N,) noise levels from the strategy
    noise: torch.Tensor  # (N, C, H, W) standard normal
    mask_noise: torch.Tensor  # (N, L) uniform, argsorted into token masks
    label_drop: torch.Tensor  # (N,) bool, True = replace the label by the null label

    def slice(self, start: int, count: int) -> "Draws":
        return Draws(*(t[start:start + count] for t in (self.sigma, self.noise, self.mask_noise, self.label_drop)))


def step_generator(seed: int, step: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (1 << 63))


def draw_step(strategy, generator: torch.Generator, batch_size: int, sample_shape: tuple[int, ...],
              num_tokens: int, label_dropout: float, device) -> Draws:
    """The global batch's draws for one optimizer step (batch_size = global batch)."""
    sigma = strategy.sample_sigma(batch_size, device, generator)  # (B,)
    noise = torch.randn((batch_size, *sample_shape), device=device, generator=generator)  # (B, C, H, W)
    mask_noise = torch.rand((batch_size, num_tokens), device=device, generator=generator)  # (B, L)
    label_drop = torch.rand(batch_size, device=device, generator=generator) < label_dropout  # (B,)
    return Draws(sigma, noise, mask_noise, label_drop)


def micro_batch_offset(round_idx: int, rank: int, num_ranks: int, batch_gpu: int) -> int:
    """Index of this process's first sample of accumulation round `round_idx` in the global batch."""
    return (round_idx * num_ranks + rank) * batch_gpu
