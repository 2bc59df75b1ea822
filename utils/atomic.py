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


class UnwritableError(OSError):
    """A file or folder could not be written (permissions, a read-only disk, a file where a folder belongs); the
    previous files are untouched."""


def write_failure(err: OSError, directory: Path, what: str) -> OSError:
    """The one-line error for a failed write of `what` into `directory`: DiskFullError for want of space, else
    UnwritableError (naming a file that stands where a folder belongs)."""
    directory = Path(directory)
    if (reason := unwritable_reason(err, directory)) is None:
        return DiskFullError(f"no space left on {directory} while writing {what}; the previous files are intact: "
                             "free some space and re-run to continue")
    return UnwritableError(f"cannot write {what} in {directory} ({reason}); the previous files are intact: make it "
                           "writable (or choose another path) and re-run to continue")


def start_failure(err: OSError, folder: Path) -> OSError:
    """The one-line error for a folder a run cannot write at start, naming the folder (and a file in its way)."""
    if (reason := unwritable_reason(err, folder)) is None:
        return DiskFullError(f"no space left on {folder}: free some space (or choose another path) and re-run")
    return UnwritableError(f"cannot write in {folder} ({reason}): make it writable (or choose another path) and "
                           "re-run")


def unwritable_reason(err: OSError, directory: Path) -> str | None:
    """Why `directory` could not be written, judged from its nearest existing ancestor: None when for want of
    space, else a file standing where a folder belongs, else the OS's reason."""
    existing = next(p for p in [directory, *directory.parents] if p.exists())
    if out_of_space(err, existing if existing.is_dir() else existing.parent):
        return None
    return f"{existing} is a file, not a folder" if existing.is_file() else err.strerror or type(err).__name__


def check_writable(folders: list[Path], probe_bytes: int = 4096) -> None:
    """Create each folder if needed and write (and remove) a small probe file in it, so a run stops at start with
    one line naming the folder it cannot write (permissions, a read-only or full disk, a file in the way), before
    any lock, log, event or stats file is opened. Probing works as root too, where permissions are not enforced
    but a full disk or a file in place of a folder still stops the write."""
    for folder in folders:
        folder = Path(folder)
        probe = folder / f".write-probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"\0" * probe_bytes)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise start_failure(err, folder) from None
        finally:
            if probe.exists():
                probe.unlink()


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
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise write_failure(err, path.parent, path.name) from None
    except RuntimeError as err:  # torch's writer reports a full disk as "file write failed; basic_ios::clear"
        if out_of_space(err, path.parent):
            raise write_failure(OSError(errno.ENOSPC, "no space left"), path.parent, path.name) from None
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
