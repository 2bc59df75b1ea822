"""EMA snapshots: the weights and everything sampling needs, readable without the training package.

A snapshot is one torch file: {"format", "model" (ModelConfig fields), "ema" (state dict), "data"
(source, autoencoder id, latent scaling — whatever decoding needs), "config" (the resolved run config),
"kimg"}. `load_for_sampling` accepts a snapshot file, a checkpoint directory, or a run directory.
"""

from pathlib import Path

import torch

from models.build import build_network

SNAPSHOT_FORMAT = 1


def strip_compile_prefix(state: dict) -> dict:
    """Checkpoints of torch.compile'd modules carry `_orig_mod.`; drop it (the reference failed here)."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def resolve_snapshot_path(path: str | Path) -> Path:
    """Snapshot file, checkpoint dir (its ema.pt), or run dir: the EMA of its newest checkpoint (always the
    latest EMA state), else its newest snapshot."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "ema.pt").is_file():
        return path / "ema.pt"
    checkpoints = [d for d in (path / "checkpoints").glob("[0-9]*") if (d / "ema.pt").is_file()] if path.is_dir() else []
    if checkpoints:
        return max(checkpoints, key=lambda d: int(d.name)) / "ema.pt"
    snaps = sorted((path / "snapshots").glob("ema-*.pt")) if path.is_dir() else []
    if snaps:
        return snaps[-1]
    raise FileNotFoundError(f"{path}: no snapshot file, checkpoint directory or run directory with snapshots")


def load_for_sampling(path: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """-> (EMA network in eval mode, snapshot metadata without the weights)."""
    file = resolve_snapshot_path(path)
    snap = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{file}: not a snapshot of format {SNAPSHOT_FORMAT}")
    net = build_network(snap["model"])
    net.load_state_dict(strip_compile_prefix(snap["ema"]))
    meta = {k: v for k, v in snap.items() if k != "ema"}
    return net.eval().requires_grad_(False).to(device), meta
