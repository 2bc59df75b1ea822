"""LMDB store of VAE posterior moments.

Key `000000042` -> record: label (int64, little endian) + moments (copies, 2C, h, w) in the stored dtype,
copies = 2 when x-flipped copies were extracted. Key `__meta__` -> JSON: count, shape (of one record's
moments), dtype, vae, scaling_factor, resolution, xflip, num_classes, source, complete.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

META_KEY = b"__meta__"
MAP_SIZE = 1 << 40  # sparse on Linux; the file only grows as records are written


def record_key(index: int) -> bytes:
    return f"{index:09d}".encode()


def encode_record(moments: np.ndarray, label: int) -> bytes:
    return np.int64(label).tobytes() + np.ascontiguousarray(moments).tobytes()


def decode_record(buf: bytes, shape: tuple, dtype: np.dtype, where: str) -> tuple[np.ndarray, int]:
    expected = 8 + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if buf is None:
        raise KeyError(f"{where}: record missing")
    if len(buf) != expected:
        raise ValueError(f"{where}: corrupted record ({len(buf)} bytes, expected {expected})")
    label = int(np.frombuffer(buf[:8], dtype=np.int64)[0])
    return np.frombuffer(buf[8:], dtype=dtype).reshape(shape), label


_READ_ENVS: dict[tuple[int, str], object] = {}


def _env_key(path: str | Path) -> tuple[int, str]:
    return os.getpid(), str(Path(path).resolve())


def open_readonly(path: str | Path):
    """One read-only environment per (process, path), kept open for record reads. LMDB refuses a second
    open of a path in one process, and a forked DataLoader worker inherits that bookkeeping: so the main
    process should not hold one open when workers start (see release_read_envs)."""
    import lmdb

    key = _env_key(path)
    if key not in _READ_ENVS:
        _READ_ENVS[key] = lmdb.open(key[1], readonly=True, lock=False, readahead=False, max_readers=256)
    return _READ_ENVS[key]


def release_read_envs() -> None:
    """Close this process's cached read environments (before starting DataLoader workers)."""
    for key in [k for k in _READ_ENVS if k[0] == os.getpid()]:
        _READ_ENVS.pop(key).close()


class StoreFormatError(ValueError):
    """A latent store's metadata (LMDB record or shard index) that the readers cannot trust; one line naming it."""


def read_meta(path: str | Path) -> dict:
    """The metadata of a complete store; one clear error otherwise. Leaves no environment open."""
    import lmdb

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LMDB {path} not found")
    cached = _READ_ENVS.get(_env_key(path))
    env = cached or lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        raw = txn.get(META_KEY)
    if cached is None:
        env.close()
    if raw is None:
        raise StoreFormatError(f"LMDB {path}: no {META_KEY.decode()} record (extraction not finished? re-run it)")
    try:
        meta = json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise StoreFormatError(f"LMDB {path}: the {META_KEY.decode()} record is not JSON ({err}); re-extract the "
                         "store") from None
    if isinstance(meta, dict) and not meta.get("complete"):
        raise StoreFormatError(f"LMDB {path}: extraction incomplete (re-run extract_latent.py to finish it)")
    if (problem := meta_problem(meta)) is not None:
        raise StoreFormatError(f"LMDB {path}: {problem}; re-extract the store")
    return meta


# The metadata fields the readers trust, with their JSON types (extract.py writes them).
META_FIELDS = {"count": int, "shape": list, "dtype": str, "vae": str, "scaling_factor": float, "xflip": bool,
               "num_classes": int, "complete": bool}


def meta_problem(meta) -> str | None:
    """What is wrong with a complete store's metadata (LMDB record or shard index copy), naming the field."""
    if not isinstance(meta, dict):
        return f"the metadata is a JSON {type(meta).__name__}, not an object"
    for key, kind in META_FIELDS.items():
        value = meta.get(key)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = isinstance(value, bool) if kind is bool else numeric if kind is float else (
            isinstance(value, kind) and not isinstance(value, bool))
        if not fits:
            return f"metadata field {key} is {value!r}, not {kind.__name__}" if key in meta else f"metadata lacks {key}"
    shape = meta["shape"]
    positive = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    if len(shape) != 4 or not positive or shape[1] % 2:
        return f"metadata field shape is {shape}, not (copies, 2 × channels, h, w) positive integers"
    try:
        np.dtype(meta["dtype"])
    except TypeError:
        return f"metadata field dtype is {meta['dtype']!r}, not a numpy dtype"
    if not (math.isfinite(meta["scaling_factor"]) and meta["scaling_factor"] > 0):
        return f"metadata field scaling_factor is {meta['scaling_factor']}, not a positive number"
    if meta["count"] < 0 or meta["num_classes"] < 0:
        return f"metadata fields count {meta['count']} and num_classes {meta['num_classes']} must be ≥ 0"
    return None


class LatentWriter:
    """Writes each record once (put with overwrite=False); safe for several processes on one host."""

    def __init__(self, path: str | Path):
        import lmdb

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.path), map_size=MAP_SIZE, subdir=True, max_readers=256)

    def existing_indices(self) -> set[int]:
        with self.env.begin() as txn:
            return {int(k) for k in txn.cursor().iternext(keys=True, values=False) if k != META_KEY}

    def meta(self) -> dict | None:
        with self.env.begin() as txn:
            raw = txn.get(META_KEY)
        return json.loads(raw) if raw is not None else None

    def put_batch(self, indices: list[int], moments: np.ndarray, labels: list[int]) -> None:
        with self.env.begin(write=True) as txn:
            for i, m, y in zip(indices, moments, labels):
                txn.put(record_key(i), encode_record(m, y), overwrite=False)

    def put_meta(self, meta: dict) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(META_KEY, json.dumps(meta).encode())

    def close(self) -> None:
        self.env.close()


class LatentLMDB(torch.utils.data.Dataset):
    """Random access to (moments (copies, 2C, h, w) float32, label). The environment is opened lazily in each
    process / DataLoader worker (readonly, no lock), never shared across a fork."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.meta = read_meta(path)
        self.shape = tuple(self.meta["shape"])
        self.dtype = np.dtype(self.meta["dtype"])

    def __len__(self) -> int:
        return self.meta["count"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with open_readonly(self.path).begin() as txn:
            buf = txn.get(record_key(index))
        moments, label = decode_record(buf, self.shape, self.dtype, f"LMDB {self.path} key {index:09d}")
        return torch.from_numpy(moments.astype(np.float32)), label
