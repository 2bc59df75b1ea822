"""Moving averages of the weights (fp32 copies): the classic EMA (per-step decay or EDM half-life) and the
power-function EMAs of EDM2 whose snapshots post-hoc EMA reconstruction combines (models/ema_profiles.py)."""

import copy

import torch

from models.ema_profiles import power_beta, sigma_rel_to_gamma


def averaged_copy(net: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(net).float().eval().requires_grad_(False)


@torch.no_grad()
def lerp_towards(ema_net: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    """θ_ema ← β θ_ema + (1 − β) θ."""
    ema_params = list(ema_net.parameters())
    params = [p.detach().float() for p in net.parameters()]
    torch._foreach_lerp_(ema_params, params, 1 - beta)


class EMA:
    """The classic EMA, updated with models.ema_profiles.classic_beta (the formula lives beside the profile it
    defines, so post-hoc reconstruction can compare with it)."""

    def __init__(self, net: torch.nn.Module):
        self.net = averaged_copy(net)

    def update(self, net: torch.nn.Module, beta: float) -> None:
        lerp_towards(self.net, net, beta)

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)


class PowerEMAs:
    """EDM2's power-function EMAs, one per σ_rel, updated after every optimizer step with β_t = (1 − 1/t)^(γ+1)
    (EDM2 Eq. 3, t = the optimizer step just taken: the first update copies the weights). Their states go into
    training checkpoints (exact resume); their periodic low-precision snapshots (training/checkpoint.py) are
    what `reconstruct_ema.py` combines after training."""

    def __init__(self, net: torch.nn.Module, sigma_rels: list[float]):
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.nets = [averaged_copy(net) for _ in self.sigma_rels]

    def update(self, net: torch.nn.Module, step: int) -> None:
        for gamma, ema_net in zip(self.gammas, self.nets):
            lerp_towards(ema_net, net, power_beta(gamma, step))

    def state_dict(self) -> dict:
        """{σ_rel as text: state dict} (plain values and tensors: loadable weights_only)."""
        return {f"{s:g}": ema_net.state_dict() for s, ema_net in zip(self.sigma_rels, self.nets)}

    def load_state_dict(self, state: dict) -> None:
        for s, ema_net in zip(self.sigma_rels, self.nets):
            if f"{s:g}" not in state:
                raise KeyError(f"no power EMA of sigma_rel {s:g} in the checkpoint (it has {sorted(state)})")
            ema_net.load_state_dict(state[f"{s:g}"])
