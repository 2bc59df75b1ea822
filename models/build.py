"""Build the preconditioned network from a model config (any object/dict with ModelConfig's fields)."""

from dataclasses import asdict, fields, is_dataclass

import torch

from models.maskdit import ARCHS, BackboneSpec, MaskDiT
from models.precond import EDMPrecond


def backbone_spec(model_cfg) -> BackboneSpec:
    """Resolve the arch preset and explicit overrides into a BackboneSpec."""
    cfg = asdict(model_cfg) if is_dataclass(model_cfg) else dict(model_cfg)
    if cfg["arch"] not in ARCHS:
        raise ValueError(f"model.arch: unknown {cfg['arch']!r}; choose from {sorted(ARCHS)}")
    depth, width, heads = ARCHS[cfg["arch"]]
    spec_keys = {f.name for f in fields(BackboneSpec)}
    spec = {k: v for k, v in cfg.items() if k in spec_keys and v is not None}
    spec.setdefault("depth", depth)
    spec.setdefault("width", width)
    spec.setdefault("heads", heads)
    return BackboneSpec(**spec)


def build_network(model_cfg) -> EDMPrecond:
    cfg = asdict(model_cfg) if is_dataclass(model_cfg) else dict(model_cfg)
    return EDMPrecond(MaskDiT(backbone_spec(cfg)), sigma_data=cfg["sigma_data"])


def count_parameters(net: torch.nn.Module, include_fixed_pos_embed: bool = True) -> int:
    """Trainable parameters; the fixed sin-cos tables are added because the reference counts include them."""
    total = sum(p.numel() for p in net.parameters())
    if include_fixed_pos_embed:
        total += sum(b.numel() for name, b in net.named_buffers() if name.endswith("pos_embed"))
    return total
