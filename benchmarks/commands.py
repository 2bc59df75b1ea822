"""The benchmarks' one way to run a suite command: a subprocess at the repository root, with a thread count."""

import os
import platform
import subprocess
import sys

import torch

from benchmarks import REPO


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}"


def python(args: list[str], threads: int | None = None) -> str:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout
