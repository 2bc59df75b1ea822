"""Checkpoint directories: written under a temp name and renamed, the last N kept.

checkpoints/<step:09d>/training_state.pt  model, optimizer, scaler, strategy, progress, data, RNG per rank
checkpoints/<step:09d>/ema.pt             the EMA snapshot (also what generate.py reads)
snapshots/ema-<kimg:09.1f>.pt             EMA snapshots kept for evaluation
"""

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from models.snapshot import strip_compile_prefix
from utils.atomic import atomic_torch_save

STATE_FILE = "training_state.pt"
EMA_FILE = "ema.pt"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.isdigit() and (d / STATE_FILE).is_file()]
    return sorted(dirs, key=lambda d: int(d.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def write_checkpoint(run_dir: Path, step: int, state: dict, snapshot: dict, keep: int) -> Path:
    """Rank 0 only. Files go to a temp dir that is renamed into place once complete."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"{step:09d}"
    tmp = root / f".tmp-{step:09d}"
    shutil.rmtree(tmp, ignore_errors=True)
    atomic_torch_save(state, tmp / STATE_FILE)
    atomic_torch_save(snapshot, tmp / EMA_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune(checkpoint_dirs(run_dir), keep, shutil.rmtree)
    return final


def write_snapshot(run_dir: Path, kimg: float, snapshot: dict, keep: int) -> Path:
    path = Path(run_dir) / "snapshots" / f"ema-{kimg:011.3f}.pt"
    atomic_torch_save(snapshot, path)
    prune(sorted(path.parent.glob("ema-*.pt")), keep, os.remove)
    return path


def prune(paths: list[Path], keep: int, remove) -> None:
    """Remove all but the newest `keep` (keep <= 0 keeps everything)."""
    if keep > 0:
        for old in paths[:-keep]:
            remove(old)


def load_checkpoint(ckpt_dir: Path) -> tuple[dict, dict]:
    """-> (training state, EMA snapshot); raises one clear line when the directory is not a checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    for name in (STATE_FILE, EMA_FILE):
        if not (ckpt_dir / name).is_file():
            raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint directory (missing {name})")
    state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=False)
    snapshot = torch.load(ckpt_dir / EMA_FILE, map_location="cpu", weights_only=False)
    state["net"] = strip_compile_prefix(state["net"])
    snapshot["ema"] = strip_compile_prefix(snapshot["ema"])
    return state, snapshot


# ----------------------------------------------------------------------------
# RNG state of one process: saved per rank, restored on the same rank.


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
