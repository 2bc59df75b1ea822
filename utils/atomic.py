"""Atomic file writes: write a temp file in the target's directory, fsync, rename over the target.

A reader (or a resumed run) sees either the old file or the complete new one, never a partial write.
"""

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


class DiskFullError(OSError):
    """No space left where a file was being written; the previous files are untouched."""


def out_of_space(err: BaseException, directory: Path, min_free_bytes: int = 1 << 20) -> bool:
    """True when a write failed for want of space: ENOSPC, or a writer's own error (torch's "basic_ios::clear",
    "failed writing") while the disk is (nearly) full."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(directory).free < min_free_bytes
    except OSError:
        return False


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temp path (same directory and suffix) to write; renamed onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if out_of_space(err, path.parent):
            raise DiskFullError(f"no space left on {path.parent} while writing {path.name}; the "
                                "previous files are intact: free some space and re-run to continue") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_savez(path: str | Path, **arrays) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
