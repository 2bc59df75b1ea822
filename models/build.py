"""Build the backbone from a model config (any object/dict with ModelConfig's fields), count its parameters and
load weights into it; the preconditioned network around it is diffusion/network.py's `build_network`."""

from dataclasses import asdict, fields, is_dataclass

import torch

from models.maskdit import ARCHS, BackboneSpec, MaskDiT
from models.routing import RouteSpec
from models.unet import DDPMUNet, UNetSpec

UNET_ARCH = "ddpm_unet"  # the DDPM CIFAR-10 U-Net baseline (models/unet.py)


def backbone_spec(model_cfg) -> BackboneSpec:
    """Resolve the arch preset and explicit overrides into a BackboneSpec."""
    cfg = asdict(model_cfg) if is_dataclass(model_cfg) else dict(model_cfg)
    if cfg["arch"] not in ARCHS:
        raise ValueError(f"model.arch: unknown {cfg['arch']!r}; choose from {sorted(ARCHS) + [UNET_ARCH]}")
    depth, width, heads = ARCHS[cfg["arch"]]
    spec_keys = {f.name for f in fields(BackboneSpec)}
    spec = {k: v for k, v in cfg.items() if k in spec_keys and v is not None}
    spec["route"] = RouteSpec(**cfg.get("route") or {})  # snapshots from before routing have no route
    spec.setdefault("depth", depth)
    spec.setdefault("width", width)
    spec.setdefault("heads", heads)
    return BackboneSpec(**spec)


def build_backbone(cfg: dict) -> torch.nn.Module:
    if cfg["arch"] == UNET_ARCH:
        return DDPMUNet(UNetSpec(cfg["resolution"], cfg["in_channels"], cfg["num_classes"],
                                 cfg.get("unet_channels", 128), cfg.get("unet_dropout", 0.1)))
    return MaskDiT(backbone_spec(cfg))


def count_parameters(net: torch.nn.Module, include_fixed_pos_embed: bool = True) -> int:
    """Trainable parameters; the fixed sin-cos tables are added because the reference counts include them."""
    total = sum(p.numel() for p in net.parameters())
    if include_fixed_pos_embed:
        total += sum(b.numel() for name, b in net.named_buffers() if name.endswith("pos_embed"))
    return total


class WeightsMismatchError(ValueError):
    """Weights that do not fit the model config (one line naming keys and shapes)."""


def load_matching(net: torch.nn.Module, state: dict, where: str) -> None:
    """load_state_dict, or one ValueError line saying which keys are missing / unexpected / of another shape
    (e.g. a run resumed with a changed model size), instead of torch's multi-line dump."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(shapes)} of another shape (first: {shapes[0]})" if shapes else "",
                 f"{len(missing)} missing (first: {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (first: {unexpected[0]})" if unexpected else ""]
        raise WeightsMismatchError(f"{where}: weights do not fit the model config: " + "; ".join(p for p in parts if p))
    net.load_state_dict(state)
