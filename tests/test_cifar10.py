"""CIFAR-10 as a pixel training source and an evaluation source, read from the python-pickle batches."""

import pickle

import numpy as np
import pytest

from conftest import TINY_OVERRIDES, run_cli
from dataio.cifar10 import load_cifar10
from evaluation.evaluate import source_batches


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A cifar-10-batches-py folder with 8 images per training batch and 6 test images."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 6)]:
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G, B
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(range(count))}, f)
    return root


def test_pickles_become_nhwc_images(tiny_cifar):
    images, labels = load_cifar10("train", str(tiny_cifar))
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist()[:8] == list(range(8))
    with open(tiny_cifar / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][0]
    assert np.array_equal(images[0, :, :, 1], row[1024:2048].reshape(32, 32))  # green plane
    test_images, _ = next(source_batches(f"cifar10:test:{tiny_cifar / 'cifar-10-batches-py'}", 100))
    assert tuple(test_images.shape) == (6, 3, 32, 32)


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 python batches"):
        load_cifar10("train", str(tmp_path))


def test_training_on_cifar10_pixels(tiny_cifar, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "--config", "configs/train/cifar10.yaml", f"run_dir={run_dir}", f"data.path={tiny_cifar}",
            *TINY_OVERRIDES, "train.total_kimg=0.032", "train.sample_kimg=1")
    assert (run_dir / "checkpoints" / "000000002" / "ema.safetensors").is_file()
    assert "cifar10[train] 40 images 3x32x32" in (run_dir / "log.txt").read_text()
