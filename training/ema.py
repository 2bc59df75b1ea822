"""Exponential moving average of the weights (fp32 copy), with a per-step decay or an EDM half-life."""

import copy

import torch


def ema_beta(batch_size: int, cur_nimg: int, decay: float | None, halflife_kimg: float | None,
             rampup_ratio: float | None) -> float:
    """Per-step β. Half-life form (EDM): β = 0.5^(batch / halflife_nimg), halflife ≤ rampup × images seen."""
    if decay is not None:
        return decay
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


class EMA:
    def __init__(self, net: torch.nn.Module):
        self.net = copy.deepcopy(net).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module, beta: float) -> None:
        """θ_ema ← β θ_ema + (1 − β) θ."""
        ema_params = list(self.net.parameters())
        params = [p.detach().float() for p in net.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - beta)

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)
