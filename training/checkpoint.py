"""The checkpoint format: what a checkpoint holds, its writer and its reader in one place, plus the run
directory's lock. (The EMA snapshot's own format, readable without this package, is models/snapshot.py.)

checkpoints/<step:09d>/model.safetensors   the trained weights (TrainedParts.net)
checkpoints/<step:09d>/ema.safetensors     the EMA snapshot (models/snapshot.py; what generate.py reads)
checkpoints/<step:09d>/training_state.pt   `training_state()`: optimizer, scaler, strategy, progress, data
                                           position, RNG per rank, parameter checksums per rank, config: tensors
                                           and plain Python values only (loaded weights_only)
checkpoints/<step:09d>/checksums.json      sha256 of each file above, verified on load
snapshots/ema-<kimg:011.3f>.safetensors    EMA snapshots kept for evaluation (`snapshot_meta()` beside the weights)
posthoc/phema-<σ_rel>-<kimg>.safetensors    fp16 snapshots of the power-function EMAs (post-hoc EMA, EDM2 §3),
                                           `posthoc_meta()` beside the weights; never pruned

A checkpoint directory is written under a temp name and renamed once complete; the last N are kept. On resume a
damaged newest checkpoint (truncated, bytes flipped, unreadable) is skipped with a warning naming it, and the
previous complete one is used.
"""

import fcntl
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from models.build import load_matching
from models.snapshot import (EMA_FILE, SUFFIX, SnapshotError, load_weights, read_snapshot, save_snapshot,
                             save_weights, snapshot_metadata)
from training.config import Config, to_dict
from training.ema import EMA, PowerEMAs
from utils.atomic import DiskFullError, UnwritableError, atomic_torch_save, atomic_write_text, write_failure

MODEL_FILE = "model" + SUFFIX
STATE_FILE = "training_state.pt"
CHECKSUM_FILE = "checksums.json"
TEMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint cannot be used (one line naming the directory or file and why)."""


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


# ----------------------------------------------------------------------------
# What a checkpoint holds.


@dataclass
class Progress:
    cur_nimg: int = 0
    step: int = 0
    train_seconds: float = 0.0  # training wall-clock over all invocations, without grid/snapshot/checkpoint writing


@dataclass
class TrainedParts:
    """What training changes besides progress, data position and RNG: all of it goes into a checkpoint."""

    net: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    strategy: object  # a NoiseLevelStrategy (diffusion/strategies): its learned state, if any
    power_emas: PowerEMAs | None = None  # post-hoc EMA's tracked power-function EMAs (train.posthoc_ema)
    self_alignment: torch.nn.Module | None = None  # SRA's projection head (loss.repr.kind sra), trained and saved


def training_state(parts: TrainedParts, scaler, data_position: dict, progress: Progress, rng_per_rank: list,
                   checksum_per_rank: list, cfg: Config) -> dict:
    """training_state.pt: everything besides the weights that an exact resume needs."""
    return {"optimizer": parts.optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "strategy": parts.strategy.state_dict(), "data": data_position, "rng": rng_per_rank,
            "cur_nimg": progress.cur_nimg, "step": progress.step, "train_seconds": progress.train_seconds,
            "config": to_dict(cfg), "param_checksums": checksum_per_rank,
            "posthoc_ema": parts.power_emas.state_dict() if parts.power_emas is not None else None,
            "self_alignment": parts.self_alignment.state_dict() if parts.self_alignment is not None else None}


def snapshot_meta(cfg: Config, decode_info: dict, progress: Progress) -> dict:
    """The metadata an EMA snapshot carries for this run (keys: models/snapshot.py)."""
    return snapshot_metadata(asdict(cfg.model), decode_info, to_dict(cfg), progress.cur_nimg / 1000,
                             progress.train_seconds / 60)


class Loaded(NamedTuple):
    """One checkpoint as read by load_checkpoint."""

    directory: Path
    net_state: dict
    state: dict  # training_state()
    ema_state: dict
    meta: dict  # snapshot_meta()


def restore(loaded: Loaded, parts: TrainedParts, scaler, progress: Progress) -> None:
    """Load a checkpoint into freshly built parts (before accelerator.prepare). The data position goes to
    build_training_data; RNG states are restored last (restore_rng_of_rank), after everything that draws."""
    where = loaded.directory
    load_matching(parts.net, loaded.net_state, f"resume from {where}")
    load_matching(parts.ema.net, loaded.ema_state, f"resume from {where} (EMA)")
    saved_head = loaded.state.get("self_alignment")  # absent in checkpoints of older versions
    if (saved_head is None) != (parts.self_alignment is None):
        started = "with" if saved_head is not None else "without"
        raise CheckpointError(f"{where}: this run was started {started} loss.repr.kind sra, whose projection head "
                              "trains with the optimizer: resume with the kind it started with, or start a new run")
    parts.optimizer.load_state_dict(loaded.state["optimizer"])
    if parts.power_emas is not None:
        if loaded.state.get("posthoc_ema") is None:
            raise CheckpointError(f"{where}: this run was started without train.posthoc_ema, and power-function "
                                  "EMAs cannot start mid-run (their profiles begin at step 1): start a new run, or "
                                  "resume with train.posthoc_ema.sigma_rels=[]")
        try:
            parts.power_emas.load_state_dict(loaded.state["posthoc_ema"])
        except KeyError as err:
            raise CheckpointError(f"{where}: {err.args[0]}; train.posthoc_ema.sigma_rels must stay as the run "
                                  "started") from None
    restore_self_alignment(loaded, parts)
    parts.strategy.load_state_dict(loaded.state["strategy"])
    if loaded.state.get("scaler") is not None and scaler is not None:
        scaler.load_state_dict(loaded.state["scaler"])
    progress.cur_nimg, progress.step = loaded.state["cur_nimg"], loaded.state["step"]
    progress.train_seconds = loaded.state.get("train_seconds", 0.0)  # absent in checkpoints of older versions


def restore_self_alignment(loaded: Loaded, parts: TrainedParts) -> None:
    if parts.self_alignment is not None:
        parts.self_alignment.load_state_dict(loaded.state["self_alignment"])


def restore_rng_of_rank(state: dict, process_index: int, num_processes: int) -> bool:
    """This rank's RNG state from the checkpoint; False (fresh streams) when the process count changed."""
    if len(state["rng"]) != num_processes:
        return False
    restore_rng(state["rng"][process_index])
    return True


def init_weights_from(path: str | Path, parts: TrainedParts) -> str:
    """Finetune start: weights and EMA from a checkpoint directory (or an EMA snapshot for both); optimizer,
    strategy and progress start fresh. -> what was loaded, for the log."""
    path = Path(path)
    if path.is_dir():
        loaded = load_checkpoint(path)
        load_matching(parts.net, loaded.net_state, f"--init-from {path}")
        load_matching(parts.ema.net, loaded.ema_state, f"--init-from {path} (EMA)")
        return f"weights + EMA from checkpoint {path}"
    ema_state, _ = read_snapshot(path)  # a bare snapshot: its EMA weights serve for both
    load_matching(parts.net, ema_state, f"--init-from {path}")
    load_matching(parts.ema.net, ema_state, f"--init-from {path}")
    return f"EMA weights from snapshot {path} (used for model and EMA)"


# ----------------------------------------------------------------------------
# Files: written atomically, checksummed, pruned; damaged ones skipped on resume.


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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(run_dir: Path, step: int, net_state: dict, state: dict, ema_state: dict, meta: dict,
                     keep: int) -> Path:
    """Rank 0 only: (weights, training_state(), EMA weights, snapshot_meta()). Files go to a temp dir that is
    renamed into place once complete and checksummed."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"{step:09d}"
    tmp = root / f"{TEMP_PREFIX}{step:09d}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_weights(tmp / MODEL_FILE, net_state)
        save_snapshot(tmp / EMA_FILE, ema_state, meta)
        atomic_torch_save(state, tmp / STATE_FILE)
        sums = {name: sha256(tmp / name) for name in (MODEL_FILE, EMA_FILE, STATE_FILE)}
        atomic_write_text(tmp / CHECKSUM_FILE, json.dumps(sums, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (DiskFullError, UnwritableError):
        raise  # already one line, naming the file
    except OSError as err:  # the temp folder or the rename: the older checkpoints are untouched either way
        raise write_failure(err, root, f"checkpoint {final.name}") from None
    prune(checkpoint_dirs(run_dir), keep, shutil.rmtree)
    return final


def write_snapshot(run_dir: Path, kimg: float, ema_state: dict, meta: dict, keep: int) -> Path:
    path = Path(run_dir) / "snapshots" / f"ema-{kimg:011.3f}{SUFFIX}"
    save_snapshot(path, ema_state, meta)
    prune(sorted(path.parent.glob("ema-*" + SUFFIX)), keep, os.remove)
    return path


def posthoc_meta(meta: dict, sigma_rel: float, gamma: float, step: int, batch_size: int) -> dict:
    """A power EMA snapshot's metadata: the run's snapshot_meta() plus its profile (what reconstruction needs)."""
    return {**meta, "posthoc_ema": {"sigma_rel": sigma_rel, "gamma": gamma, "step": step, "batch_size": batch_size}}


def write_posthoc_snapshots(run_dir: Path, power_emas: PowerEMAs, meta: dict, step: int, batch_size: int) -> None:
    """One snapshot per tracked σ_rel, atomically, never pruned: parameters in fp16 (EDM2 stores them in low
    precision too), buffers (fixed position tables) as they are."""
    for sigma_rel, gamma, ema_net in zip(power_emas.sigma_rels, power_emas.gammas, power_emas.nets):
        path = Path(run_dir) / "posthoc" / f"phema-{sigma_rel:.4f}-{meta['kimg']:011.3f}{SUFFIX}"
        params = dict(ema_net.named_parameters())
        state = {k: v.half() if k in params else v for k, v in ema_net.state_dict().items()}
        save_snapshot(path, state, posthoc_meta(meta, sigma_rel, gamma, step, batch_size))


def prune(paths: list[Path], keep: int, remove) -> None:
    """Remove all but the newest `keep` (keep <= 0 keeps everything). Only complete, finite checkpoints are ever
    written (training/loop.py checks), so the newest ones kept are healthy."""
    if keep > 0:
        for old in paths[:-keep]:
            remove(old)


def verify(ckpt_dir: Path) -> None:
    sums_file = ckpt_dir / CHECKSUM_FILE
    if not sums_file.is_file():
        raise CheckpointError(f"{ckpt_dir}: no {CHECKSUM_FILE} (an old pickled checkpoint of this suite? convert it "
                              "with python scripts/convert_checkpoint.py)")
    for name, expected in json.loads(sums_file.read_text()).items():
        if not (ckpt_dir / name).is_file():
            raise CheckpointError(f"{ckpt_dir / name}: missing")
        if sha256(ckpt_dir / name) != expected:
            raise CheckpointError(f"{ckpt_dir / name}: checksum mismatch (the file is damaged)")


def load_checkpoint(ckpt_dir: Path) -> Loaded:
    """One CheckpointError line when the directory is not a complete, intact checkpoint of this format.
    Nothing is unpickled beyond tensors and plain values (weights_only)."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).is_file():
        raise CheckpointError(f"{ckpt_dir}: not a checkpoint directory (missing {STATE_FILE})")
    verify(ckpt_dir)
    try:
        state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
        net_state, _ = load_weights(ckpt_dir / MODEL_FILE)
        ema_state, meta = read_snapshot(ckpt_dir / EMA_FILE)
    except (SnapshotError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{ckpt_dir}: unreadable ({str(err).splitlines()[0]})") from None
    return Loaded(ckpt_dir, net_state, state, ema_state, meta)


def load_newest_healthy(run_dir: Path, warn=print) -> Loaded | None:
    """The newest checkpoint that verifies and loads; damaged newer ones are skipped with a warning. None when
    there is none; CheckpointError if all of them are damaged."""
    dirs = checkpoint_dirs(run_dir)
    for ckpt_dir in reversed(dirs):
        try:
            return load_checkpoint(ckpt_dir)
        except CheckpointError as err:
            if warn is not None:
                warn(f"warning: skipping checkpoint {ckpt_dir.name}: {err}", flush=True)
    if dirs:
        raise CheckpointError(f"{run_dir}: none of the {len(dirs)} checkpoints can be used (see the warnings above)")
    return None


# safetensors >= 0.5 writes through its own temp file beside the target (Rust's tempfile crate: ".tmp" and six
# letters or digits) before renaming it to our temp name: a kill at that moment leaves one of these.
SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")


def remove_stale_temp_files(run_dir: Path) -> None:
    """Leftovers of a process killed while writing: temp checkpoint dirs and temp snapshot files (ours and
    safetensors' own) in the run's snapshot folders."""
    run_dir = Path(run_dir)
    for tmp in (run_dir / "checkpoints").glob(TEMP_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for folder, ours in ((run_dir / "snapshots", ".ema-*.tmp*"), (run_dir / "posthoc", ".phema-*.tmp*")):
        for tmp in [*folder.glob(ours), *(p for p in folder.glob(".tmp*") if SAFETENSORS_TEMP.fullmatch(p.name))]:
            tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------
# The run directory's lock: one live process per run directory (the OS releases it when the process dies).


def lock_run_dir(run_dir: Path):
    """Take an exclusive lock on <run_dir>/.lock; returns the open file (keep it alive for the run). A second
    process on the same run directory gets RunLockedError naming the holder's pid."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise RunLockedError(f"run directory {run_dir} is in use by another process (pid {holder}); wait for it "
                             "to finish or choose another run_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


# ----------------------------------------------------------------------------
# RNG state of one process: saved per rank, restored on the same rank (plain values, loadable weights_only).


def capture_rng() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
