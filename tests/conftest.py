import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
torch.set_num_threads(2)


def write_idx(path: Path, array: np.ndarray) -> None:
    """uint8 array -> gzipped IDX file (magic 0x0008, ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> Path:
    """A 96-image Fashion-MNIST-format directory: class k is a bright square at a class-specific place."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 10
    images = rng.integers(0, 40, size=(96, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 * k:2 * k + 8, 4:12] = 255
    write_idx(root / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    return root


TINY_OVERRIDES = [
    "model.depth=2", "model.width=32", "model.heads=2", "model.patch_size=4",
    "model.decoder_depth=1", "model.decoder_width=32", "model.decoder_heads=2",
    "train.batch_size=16", "train.total_kimg=0.128", "train.log_kimg=0.032", "train.checkpoint_kimg=0.064",
    "train.snapshot_kimg=0.064", "train.sample_kimg=0.128", "grid.num_images=10", "grid.sampling.num_steps=3",
    "optim.warmup_kimg=0.05",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(script: str, *args: str, check: bool = True, env_extra: dict | None = None,
            processes: int = 1) -> subprocess.CompletedProcess:
    """Run one of the commands (a script path, or a module name run with -m); processes > 1 launches it with
    torchrun (gloo on this CPU machine)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2" if processes == 1 else "1",
               **(env_extra or {}))
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
        "127.0.0.1", "--master_port", str(free_port())]
    target = [str(REPO / script)] if script.endswith(".py") else ["-m", script]  # a script, or a module (benchmarks)
    proc = subprocess.run([*launcher, *target, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train_tiny(run_dir: Path, data_dir: Path, *extra: str, config: str = "configs/train/fashion-mnist.yaml",
               check: bool = True, processes: int = 1) -> subprocess.CompletedProcess:
    return run_cli("train.py", "--config", config, f"run_dir={run_dir}", f"data.path={data_dir}",
                   *TINY_OVERRIDES, *extra, check=check, processes=processes)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, tiny_fmnist) -> Path:
    """One complete tiny training run (8 steps of 16 images), shared by the tests that read its outputs."""
    run_dir = tmp_path_factory.mktemp("full")
    train_tiny(run_dir, tiny_fmnist, "train.keep_checkpoints=1")
    return run_dir


def read_checkpoint(ckpt_dir: Path) -> tuple[dict, dict]:
    """-> (training state with the model weights under "net", snapshot metadata with the EMA under "ema"),
    read through the suite's own verified loader."""
    from training.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt_dir)
    return {**loaded.state, "net": loaded.net_state}, {**loaded.meta, "ema": loaded.ema_state}


def read_snapshot_meta(path: Path) -> dict:
    from models.snapshot import read_snapshot

    return read_snapshot(path)[1]
