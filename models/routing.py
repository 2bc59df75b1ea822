"""Token routing (TREAD, Krause et al., arXiv 2501.04765; code CompVis/tread): a random subset of tokens
bypasses the middle blocks of the transformer and re-enters unchanged.

Mechanics as in the public code (REFERENCE.md §5):
- per sample and per forward pass, argsort fresh uniform noise; the first int(T·(1 − ratio)) tokens are the
  ones the routed blocks process, the rest bypass (ratio 0.5 = half the tokens bypass, TREAD's
  `selection_rate`);
- tokens leave *before* block `start` runs and re-enter *after* block `end` runs (0-indexed, inclusive);
- reinsertion: the full sequence at the input of block `start` is kept, and after block `end` the processed
  tokens are scattered back into their positions of that copy, so bypassing tokens re-enter with their
  pre-route activations (replaced, not added);
- no new parameters; the loss is the plain loss over all tokens; routing is off in eval and sampling.
"""

from dataclasses import dataclass

import torch


@dataclass
class RouteSpec:
    ratio: float = 0.0  # share of tokens that bypass blocks start..end; 0 = off
    start: int = 2  # first routed block (TREAD: 2)
    end: int | None = None  # last routed block, inclusive; None = depth − 4 (TREAD's absolute rule i=2, j=B−4)

    def resolved_end(self, depth: int) -> int:
        return depth - 4 if self.end is None else self.end

    def check(self, depth: int) -> None:
        end = self.resolved_end(depth)
        if not 0 <= self.ratio < 1:
            raise ValueError(f"model.route.ratio: {self.ratio} must be in [0, 1)")
        if self.ratio > 0 and not 0 <= self.start <= end < depth:
            raise ValueError(f"model.route: start {self.start} and end {end} must satisfy 0 ≤ start ≤ end < depth "
                             f"{depth}")


def num_routed_tokens(num_tokens: int, ratio: float) -> int:
    """Tokens the routed blocks process (the others bypass)."""
    return int(num_tokens * (1 - ratio))


def route_ids(route_noise: torch.Tensor, num_tokens: int, ratio: float) -> torch.Tensor:
    """(N, L) uniform noise -> (N, R) indices of the tokens the routed blocks process, for a sequence of
    num_tokens ≤ L tokens (with MaskDiT's masking, the visible ones); R = int(num_tokens·(1 − ratio))."""
    order = torch.argsort(route_noise[:, :num_tokens], dim=1)  # (N, T)
    return order[:, :num_routed_tokens(num_tokens, ratio)]  # (N, R)


def take(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, T, D), (N, R) -> (N, R, D)."""
    return torch.gather(x, 1, ids[:, :, None].expand(-1, -1, x.shape[-1]))


def put_back(full: torch.Tensor, processed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Scatter the processed tokens (N, R, D) into their positions of the pre-route sequence full (N, T, D)."""
    return full.scatter(1, ids[:, :, None].expand(-1, -1, full.shape[-1]), processed.to(full.dtype))
