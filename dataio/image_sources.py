"""Image sources: the one parser of `kind:ARGUMENT` for extraction, evaluation and training.

  imagefolder:DIR             class tree (class = sorted sub-directory), any size; extraction
  folder:DIR                  a flat folder of PNGs, as generate.py writes them (no labels)
  fashion_mnist[:SPLIT[:DIR]] the 28×28 images zero-padded to 32×32, 1 channel: the images the suite trains on
  cifar10[:SPLIT[:DIR]]       32×32 RGB (torchvision's files, downloaded when online)
  npz:FILE                    arr_0 uint8 (N, H, W[, C]), optional arr_1 labels (ADM's sample layout)

The same name means the same images everywhere. Every source gives a count up front and random access to
(PIL image, label), so extraction can resume at any index and split indices across processes; `uint8_batches`
streams (N, C, H, W) uint8 tensors for evaluation, and `in_memory_images` gives training its [-1, 1] tensors.
The split defaults to the caller's (extraction and training: train; evaluation: test).
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

FASHION_MNIST_PAD = 2  # pixels of black border on each side: 28×28 -> 32×32, a patch-friendly size
SOURCE_KINDS = "imagefolder:DIR, folder:DIR, fashion_mnist[:SPLIT[:DIR]], cifar10[:SPLIT[:DIR]] or npz:FILE"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".JPEG", ".JPG", ".PNG"}


def adm_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """ADM's center_crop_arr: BOX-halve while ≥ 2× the target, BICUBIC-resize the short side, center crop."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


class ArraySource:
    """In-memory uint8 images (N, H, W, C) with labels (None when the source has none)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, num_classes: int, description: str):
        self.images = images if images.ndim == 4 else images[..., None]  # (N, H, W, C)
        self.labels, self.num_classes, self.description = labels, num_classes, description

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[Image.Image, int]:
        image = self.images[index]
        if image.shape[-1] == 1:  # (H, W, 1) grey
            image = image[..., 0]
        label = int(self.labels[index]) if self.labels is not None else 0
        return Image.fromarray(image).convert("RGB"), label


class ImageFolderSource:
    def __init__(self, root: str):
        root_path = Path(root)
        if not root_path.is_dir():
            raise FileNotFoundError(f"imagefolder {root}: not a directory")
        classes = sorted(d.name for d in root_path.iterdir() if d.is_dir())
        if not classes:
            raise FileNotFoundError(f"imagefolder {root}: no class sub-directories")
        self.files = [(f, k) for k, c in enumerate(classes) for f in sorted((root_path / c).rglob("*"))
                      if f.suffix in IMAGE_SUFFIXES]
        if not self.files:
            raise FileNotFoundError(f"imagefolder {root}: no images")
        self.num_classes = len(classes)
        self.description = f"imagefolder {root} ({len(self.files)} images, {len(classes)} classes)"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.files[index]
        try:
            return Image.open(path).convert("RGB"), label
        except OSError as err:
            raise ValueError(f"{path}: cannot read image ({err})") from None


class PngFolderSource:
    """A flat folder of PNGs (generate.py's output), sorted by name, without labels."""

    def __init__(self, root: str):
        self.files = sorted(Path(root).glob("*.png"))
        if not self.files:
            raise FileNotFoundError(f"folder {root}: no PNG files")
        self.num_classes, self.labels = 0, None
        self.description = f"folder {root} ({len(self.files)} PNGs)"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[Image.Image, int]:
        return Image.open(self.files[index]).convert("RGB"), 0

    def array(self, index: int) -> np.ndarray:
        """(H, W, C) uint8 as stored (grey stays 1 channel)."""
        a = np.asarray(Image.open(self.files[index]))
        return a if a.ndim == 3 else a[..., None]


def fashion_mnist_source(split: str, directory: str | None) -> ArraySource:
    from dataio.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist(split, directory)
    pad = FASHION_MNIST_PAD
    images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))  # (N, 32, 32), the background stays black
    return ArraySource(images, labels, 10, f"fashion_mnist[{split}] {len(labels)} images 1x32x32")


def cifar10_source(split: str, directory: str | None) -> ArraySource:
    from dataio.cifar10 import load_cifar10

    images, labels = load_cifar10(split, directory)
    return ArraySource(images, labels, 10, f"cifar10[{split}] {len(labels)} images 3x32x32")


def npz_source(path: str) -> ArraySource:
    if not Path(path).is_file():
        raise FileNotFoundError(f"npz source {path} not found")
    with np.load(path) as npz:
        if "arr_0" not in npz.files:
            raise ValueError(f"{path}: no arr_0 (uint8 NHWC images)")
        images = npz["arr_0"]
        labels = npz["arr_1"] if "arr_1" in npz.files else None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"npz {path}: arr_0 must be uint8 (N, H, W[, 1|3|4]); got {images.dtype} "
                         f"{tuple(images.shape)}")
    num_classes = int(labels.max()) + 1 if labels is not None and len(labels) else 1
    return ArraySource(images, labels, num_classes, f"npz {path}")


def open_source(spec: str, default_split: str = "train"):
    """The one parser (module docstring). -> a source with __len__, load(i), num_classes, description."""
    kind, _, rest = spec.partition(":")
    if kind == "imagefolder":
        return ImageFolderSource(rest)
    if kind == "folder":
        return PngFolderSource(rest)
    if kind in ("fashion_mnist", "cifar10"):
        split, _, directory = rest.partition(":")
        build = fashion_mnist_source if kind == "fashion_mnist" else cifar10_source
        return build(split or default_split, directory or None)
    if kind == "npz":
        return npz_source(rest)
    raise ValueError(f"source {spec!r}: expected {SOURCE_KINDS}")


def uint8_batches(source, batch: int):
    """Yield ((B, C, H, W) uint8 tensor, (B,) labels or None) in index order: evaluation's view of a source."""
    if isinstance(source, ImageFolderSource):
        raise ValueError(f"{source.description}: evaluation reads fixed-size images (folder:, npz:, fashion_mnist:, "
                         "cifar10:); extract an imagefolder tree with extract_latent.py instead")
    labels = torch.from_numpy(source.labels) if source.labels is not None else None
    for start in range(0, len(source), batch):
        if isinstance(source, PngFolderSource):
            arrays = np.stack([source.array(i) for i in range(start, min(start + batch, len(source)))])
        else:
            arrays = source.images[start:start + batch]
        images = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2)  # (B, C, H, W) uint8
        yield images, labels[start:start + batch] if labels is not None else None


def in_memory_images(source: ArraySource) -> tuple[torch.Tensor, torch.Tensor]:
    """Training's view: ((N, C, H, W) float32 in [-1, 1], (N,) int64 labels)."""
    images = torch.from_numpy(np.ascontiguousarray(source.images.transpose(0, 3, 1, 2))).float() / 127.5 - 1
    return images, torch.from_numpy(source.labels).long()
