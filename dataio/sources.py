"""Training data sources. Pixel sources load into memory as float tensors in [-1, 1]."""

from dataclasses import dataclass

import numpy as np
import torch

from dataio.fashion_mnist import load_fashion_mnist

SOURCES = ("fashion_mnist",)


class DataMismatchError(ValueError):
    """The data does not fit the model config (one line naming both)."""


@dataclass
class InMemoryImages:
    images: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    description: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return torch.from_numpy(images).float() / 127.5 - 1


def fashion_mnist_padded(split: str, directory: str | None) -> InMemoryImages:
    """28×28 gray images zero-padded to 32×32 (background stays black), 1 channel."""
    images, labels = load_fashion_mnist(split, directory)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # (N, 32, 32)
    return InMemoryImages(uint8_to_unit(images)[:, None], torch.from_numpy(labels), 10,
                          f"fashion_mnist[{split}] {len(labels)} images 1x32x32")


def build_source(data_cfg) -> InMemoryImages:
    if data_cfg.source == "fashion_mnist":
        return fashion_mnist_padded("train", data_cfg.path)
    raise DataMismatchError(f"data.source: unknown {data_cfg.source!r}; choose from {list(SOURCES)}")


def check_matches_model(data: InMemoryImages, model_cfg) -> None:
    """Fail before training when the data shape or classes disagree with the model config."""
    expected = (model_cfg.in_channels, model_cfg.resolution, model_cfg.resolution)
    if data.sample_shape != expected:
        raise DataMismatchError(f"data {data.description}: sample shape {data.sample_shape} does not match the model "
                         f"(model.in_channels, model.resolution) = {expected}")
    if model_cfg.num_classes and data.num_classes != model_cfg.num_classes:
        raise DataMismatchError(f"data {data.description}: {data.num_classes} classes but model.num_classes = "
                         f"{model_cfg.num_classes}")
