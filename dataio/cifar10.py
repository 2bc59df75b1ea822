"""CIFAR-10 from the python-pickle batches: a local directory, or torchvision's download into the cache.

A directory may be the `cifar-10-batches-py` folder itself or one containing it; torchvision's integrity
check is not needed to read it (so a hand-made directory works), only to download.
"""

import pickle
from pathlib import Path

import numpy as np

from utils.cache import cache_root

BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def batches_dir(directory: str | None) -> Path:
    """The folder holding the pickles: `directory` (or its cifar-10-batches-py), else the cache, downloaded."""
    if directory is not None:
        for candidate in (Path(directory), Path(directory) / "cifar-10-batches-py"):
            if (candidate / "test_batch").is_file():
                return candidate
        raise FileNotFoundError(f"{directory}: no CIFAR-10 python batches (cifar-10-batches-py/test_batch)")
    root = cache_root() / "cifar10"
    if not (root / "cifar-10-batches-py" / "test_batch").is_file():
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(root), train=False, download=True)
        except OSError as err:
            raise FileNotFoundError(f"CIFAR-10 not found in {root} and the download failed ({err}); "
                                    "set data.path to a directory with cifar-10-batches-py") from None
    return root / "cifar-10-batches-py"


def load_cifar10(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> images (N, 32, 32, 3) uint8, labels (N,) int64."""
    if split not in BATCHES:
        raise ValueError(f"CIFAR-10 split {split!r}: expected train or test")
    folder = batches_dir(directory)
    images, labels = [], []
    for name in BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing CIFAR-10 batch")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)
