"""The noise-level strategy interface. Everything is expressed in EDM σ; weights are x0-space λ(σ)."""

from abc import ABC, abstractmethod

import torch


class NoiseLevelStrategy(ABC):
    """Draws per-sample σ, gives per-sample x0-space loss weights, and may learn from observed losses.

    The trainer calls, per step: `sample_sigma` (through the draws), `loss_weight` and `objective_ratio`
    (through the loss, inside the compiled step: tensor ops only, no host syncs or data-dependent branches),
    and — only when `learns_from_losses` — `loss_statistics` on its own samples, whose sums it reduces over
    all processes after each optimizer step and hands to `update_from_sums`, so the state is identical on all
    ranks. State goes into checkpoints via `state_dict` / `load_state_dict`; `to` puts it on the device.
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

    def loss_statistics(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> torch.Tensor | None:
        """σ (M,) and the unweighted per-sample loss (M,) -> a tensor of sums that adds across samples and processes
        (the trainer adds it up and all-reduces it), or None for strategies that do not learn."""
        return None

    def update_from_sums(self, sums: torch.Tensor) -> None:
        """Learn from `loss_statistics` summed over every sample of every process since the last update."""

    def update(self, sigma: torch.Tensor, raw_loss: torch.Tensor) -> None:
        """Learn from σ (M,) and the unweighted per-sample loss (M,) of one whole global batch."""
        sums = self.loss_statistics(sigma, raw_loss)
        if sums is not None:
            self.update_from_sums(sums)

    def to(self, device) -> "NoiseLevelStrategy":
        """Move every table and statistic to `device` once, so that no training step copies a host tensor
        (each copy is a host sync on a GPU). The trainer calls it after building or restoring the strategy."""
        move_tensors(self, torch.device(device))
        return self

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report(self) -> dict:
        """Scalars worth logging (kept small: one dict per log line)."""
        return {}


def move_tensors(obj, device: torch.device) -> None:
    """Move the tensor attributes of `obj` to `device`, recursing into dicts and into the helper objects that
    strategies hold (schedules, bins, bin statistics: anything defined under diffusion/)."""
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            setattr(obj, name, value.to(device))
        elif isinstance(value, dict):
            for item in value.values():
                if type(item).__module__.startswith("diffusion."):
                    move_tensors(item, device)
        elif type(value).__module__.startswith("diffusion."):
            move_tensors(value, device)


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM loss weight λ(σ) = (σ² + σ_d²) / (σ·σ_d)² (Karras et al. 2022, Eq. 8 / Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def min_snr_weight(sigma: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ x0-space weight min(SNR, γ) = min(1/σ², γ) (Hang et al. 2023, Eq. 9 in x0 form)."""
    return torch.clamp(1.0 / sigma.square(), max=gamma)


def lognormal_sigma(batch: int, device, p_mean: float, p_std: float, generator=None) -> torch.Tensor:
    """ln σ ~ N(p_mean, p_std²) (EDM's training distribution). -> (batch,)"""
    return (torch.randn(batch, device=device, generator=generator) * p_std + p_mean).exp()
