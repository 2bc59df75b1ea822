"""EMA snapshots: the format's writer and reader, readable without the training package.

A snapshot is one safetensors file: the EMA weights as tensors, and one JSON metadata record under the key
"maskdit" = {"format", "model" (ModelConfig fields), "data" (source, autoencoder id, latent scaling — whatever
decoding needs), "config" (the resolved run config), "kimg", "train_minutes"}. Nothing in it is executable:
a snapshot handed to generate.py or eval_latent.py cannot run code. `resolve_snapshot_path` accepts a snapshot
file, a checkpoint directory (its ema.safetensors) or a run directory; a pickled `.pt` file is refused with
one line (scripts/convert_checkpoint.py converts this suite's old pickled checkpoints, explicitly).
"""

import json
from pathlib import Path

import torch


SNAPSHOT_FORMAT = 2  # 1 was a pickled torch file
SUFFIX = ".safetensors"
EMA_FILE = "ema" + SUFFIX  # the EMA snapshot inside a checkpoint directory
META_KEY = "maskdit"


class SnapshotError(ValueError):
    """A file is not a readable snapshot of this suite (one line naming it)."""


def strip_compile_prefix(state: dict) -> dict:
    """Checkpoints of torch.compile'd modules carry `_orig_mod.`; drop it (the reference failed here)."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def save_weights(path: str | Path, state: dict, meta: dict | None = None) -> None:
    """Tensors + optional JSON metadata as safetensors, written atomically (temp file + rename)."""
    from safetensors.torch import save_file

    from utils.atomic import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in strip_compile_prefix(state).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)} if meta is not None else None)


def load_weights(path: str | Path) -> tuple[dict, dict | None]:
    """-> (tensors, metadata or None). Refuses anything that is not a safetensors file with one line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != SUFFIX:
        raise SnapshotError(f"{path}: not a {SUFFIX} file; this suite never unpickles weights (old pickled "
                            "checkpoints of this suite: python scripts/convert_checkpoint.py)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise SnapshotError(f"{path}: unreadable safetensors file ({str(err).splitlines()[0]})") from None
    return tensors, json.loads(raw) if raw is not None else None


def snapshot_metadata(model: dict, data: dict, config: dict, kimg: float, train_minutes: float) -> dict:
    """The metadata record (without "format", which save_snapshot adds): model = ModelConfig fields (what
    build_network needs), data = what decoding needs (dataio/autoencoder.py's Decoder), config = the resolved
    run config, kimg / train_minutes = training progress when the EMA was taken."""
    return {"model": model, "data": data, "config": config, "kimg": kimg, "train_minutes": train_minutes}


def save_snapshot(path: str | Path, ema_state: dict, meta: dict) -> None:
    save_weights(path, ema_state, {"format": SNAPSHOT_FORMAT, **meta})


def read_snapshot(path: str | Path) -> tuple[dict, dict]:
    """-> (EMA state dict, metadata)."""
    state, meta = load_weights(path)
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: not a snapshot of format {SNAPSHOT_FORMAT} (no '{META_KEY}' metadata)")
    return state, meta


def resolve_snapshot_path(path: str | Path) -> Path:
    """Snapshot file, checkpoint dir (its ema file), or run dir: the EMA of its newest checkpoint (always the
    latest EMA state), else its newest snapshot."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / EMA_FILE).is_file():
        return path / EMA_FILE
    checkpoints = [d for d in (path / "checkpoints").glob("[0-9]*") if (d / EMA_FILE).is_file()] if path.is_dir() else []
    if checkpoints:
        return max(checkpoints, key=lambda d: int(d.name)) / EMA_FILE
    snaps = sorted((path / "snapshots").glob("ema-*" + SUFFIX)) if path.is_dir() else []
    if snaps:
        return snaps[-1]
    raise FileNotFoundError(f"{path}: no snapshot file, checkpoint directory or run directory with snapshots")
