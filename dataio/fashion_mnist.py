"""Fashion-MNIST from IDX files: a local directory, the Debian package, or a cached download."""

import gzip
import os
import urllib.request
from pathlib import Path

import numpy as np

from utils.cache import cache_root

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


def cache_dir() -> Path:
    return cache_root() / "fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """IDX (optionally .gz) -> uint8 array; the header says the shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(shape))} bytes)")
    return body.reshape(shape)


def find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def download(stem: str) -> Path:
    """Fetch `stem`.gz into the cache (atomic rename) and return its path."""
    target = cache_dir() / (stem + ".gz")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        urllib.request.urlretrieve(MIRROR + stem + ".gz", tmp)
    except OSError as err:
        raise FileNotFoundError(
            f"Fashion-MNIST file {stem} not found locally and the download failed ({err}); "
            f"install the Debian package dataset-fashion-mnist or set data.path to a directory with the IDX files"
        ) from None
    os.replace(tmp, target)
    return target


def locate(stem: str, directory: str | None) -> Path:
    """An explicit directory must hold the file; otherwise try the Debian dir, the cache, then download."""
    if directory is not None:
        found = find_file(Path(directory), stem)
        if found is None:
            raise FileNotFoundError(f"data.path {directory}: no {stem}[.gz] there")
        return found
    for candidate in (Path(DEBIAN_DIR), cache_dir()):
        found = find_file(candidate, stem)
        if found is not None:
            return found
    return download(stem)


def load_fashion_mnist(split: str = "train", directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> images (N, 28, 28) uint8, labels (N,) int64."""
    image_stem, label_stem = FILES[split]
    images = read_idx(locate(image_stem, directory))
    labels = read_idx(locate(label_stem, directory)).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {images.shape} images vs {labels.shape} labels")
    return images, labels
