"""The noise-level strategy interface. Everything is expressed in EDM σ; weights are x0-space λ(σ)."""

from abc import ABC, abstractmethod

import torch


class NoiseLevelStrategy(ABC):
    """Draws per-sample σ, gives per-sample x0-space loss weights, and may learn from observed losses.

    The trainer calls, per step: `sample_sigma` (through the draws), `loss_weight` and `objective_ratio`
    (through the loss), and — only when
    `learns_from_losses` — `update` with (σ, unweighted loss) gathered from every process, so the state is
    identical on all ranks. State goes into checkpoints via `state_dict` / `load_state_dict`.
    """

    name = "base"
    learns_from_losses = False

    @abstractmethod
    def sample_sigma(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch,) float32 noise levels, drawn from `generator` (the global RNG when None)."""

    @abstractmethod
    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) σ -> (N,) x0-space weights."""

    def objective_ratio(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """(N,) per-sample multiplier of the whole objective (denoising and MAE terms), or None for 1.

        Strategies that sample σ from a proposal q instead of the base density p return p(σ)/q(σ) here, so
        E_q[ratio · loss] = E_p[loss] for every term of the objective, not only the weighted denoising term."""
        return None

    def update(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> None:
        """Learn from σ (M,) and the unweighted per-sample loss (M,) of the whole global batch."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report(self) -> dict:
        """Scalars worth logging (kept small: one dict per log line)."""
        return {}


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM loss weight λ(σ) = (σ² + σ_d²) / (σ·σ_d)² (Karras et al. 2022, Eq. 8 / Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def lognormal_sigma(batch: int, device, p_mean: float, p_std: float, generator=None) -> torch.Tensor:
    """ln σ ~ N(p_mean, p_std²) (EDM's training distribution). -> (batch,)"""
    return (torch.randn(batch, device=device, generator=generator) * p_std + p_mean).exp()
