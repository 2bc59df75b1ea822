"""One image-source parser for extraction, evaluation and training: the same name gives the same images."""

import numpy as np
import pytest
import torch
from PIL import Image

from dataio.image_sources import open_source, uint8_batches
from dataio.training_data import pixel_images


def test_fashion_mnist_is_the_same_images_for_extraction_evaluation_and_training(tiny_fmnist):
    spec = f"fashion_mnist:train:{tiny_fmnist}"
    evaluated, labels = next(uint8_batches(open_source(spec, default_split="test"), 96))  # (96, 1, 32, 32) uint8
    trained = pixel_images("fashion_mnist", "train", str(tiny_fmnist))
    extracted, label = open_source(spec).load(5)  # what extraction crops and encodes
    assert evaluated.shape == (96, 1, 32, 32) and trained.images.shape == (96, 1, 32, 32)
    assert torch.equal(((trained.images + 1) * 127.5).round().to(torch.uint8), evaluated)
    assert np.array_equal(np.asarray(extracted)[..., 0], evaluated[5, 0].numpy()) and extracted.size == (32, 32)
    assert label == int(labels[5]) == int(trained.labels[5])
    assert evaluated[:, :, :2].max() == 0  # the 2-pixel black border of the padding


def test_a_png_folder_reads_the_same_for_extraction_and_evaluation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i:06d}.png")
    images, labels = next(uint8_batches(open_source(f"folder:{tmp_path}"), 8))
    assert labels is None and torch.equal(images, torch.from_numpy(arrays).permute(0, 3, 1, 2))
    assert np.array_equal(np.asarray(open_source(f"folder:{tmp_path}").load(2)[0]), arrays[2])


def test_unknown_kind_names_every_kind():
    with pytest.raises(ValueError, match="imagefolder:DIR, folder:DIR, fashion_mnist"):
        open_source("imagenet:/data")
