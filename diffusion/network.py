"""The preconditioned network: a backbone (models/) inside the preconditioning of model.precond
(diffusion/precond.py), built from a model config or loaded from an EMA snapshot for sampling.

It lives in diffusion/ because the preconditioning owns σ and the EDM / VP scalings: imports point down, from
diffusion/ to models/, never back.
"""

from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from diffusion.precond import EDMPrecond, VPPrecond
from models.build import build_backbone, load_matching
from models.snapshot import read_snapshot, resolve_snapshot_path

PRECONDS = ("edm", "vp")


def build_network(model_cfg) -> EDMPrecond:
    """Backbone by model.arch, wrapped in the preconditioning of model.precond (edm, or vp = ε-prediction)."""
    cfg = asdict(model_cfg) if is_dataclass(model_cfg) else dict(model_cfg)
    precond = cfg.get("precond", "edm")  # snapshots written before the key existed are EDM
    if precond not in PRECONDS:
        raise ValueError(f"model.precond: unknown {precond!r}; choose from {list(PRECONDS)}")
    backbone = build_backbone(cfg)
    return VPPrecond(backbone) if precond == "vp" else EDMPrecond(backbone, sigma_data=cfg["sigma_data"])


def load_for_sampling(path: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """A snapshot file, checkpoint directory or run directory -> (EMA network in eval mode, snapshot metadata)."""
    file = resolve_snapshot_path(path)
    state, meta = read_snapshot(file)
    net = build_network(meta["model"])
    load_matching(net, state, str(file))
    return net.eval().requires_grad_(False).to(device), meta
