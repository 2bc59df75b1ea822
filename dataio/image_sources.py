"""Image sources for latent extraction: ImageFolder tree, Fashion-MNIST, CIFAR-10, npz of images.

A source is `kind:argument`: `imagefolder:DIR` (class = sorted sub-directory), `fashion_mnist[:SPLIT[:DIR]]`,
`cifar10[:SPLIT[:DIR]]` (torchvision, downloaded when online), `npz:FILE` (arr_0 uint8 NHWC, optional arr_1).
Each gives a count up front and random access to (uint8 HWC RGB array, label), so extraction can resume
at any index and split indices across processes.
"""

from pathlib import Path

import numpy as np
from PIL import Image

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
    """In-memory uint8 images (N, H, W[, C]) with labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, description: str):
        self.images, self.labels, self.num_classes, self.description = images, labels, num_classes, description

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[Image.Image, int]:
        image = self.images[index]
        if image.ndim == 3 and image.shape[-1] == 1:  # (H, W, 1) grey, as generate.py writes npz for 1-channel models
            image = image[..., 0]
        return Image.fromarray(image).convert("RGB"), int(self.labels[index])


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


def open_source(spec: str):
    kind, _, rest = spec.partition(":")
    if kind == "imagefolder":
        return ImageFolderSource(rest)
    if kind == "fashion_mnist":
        from dataio.fashion_mnist import load_fashion_mnist

        split, _, directory = rest.partition(":")
        images, labels = load_fashion_mnist(split or "train", directory or None)
        return ArraySource(images, labels, 10, f"fashion_mnist[{split or 'train'}]")
    if kind == "cifar10":
        from dataio.cifar10 import load_cifar10

        split, _, directory = rest.partition(":")
        images, labels = load_cifar10(split or "train", directory or None)
        return ArraySource(images, labels, 10, f"cifar10[{split or 'train'}]")
    if kind == "npz":
        if not Path(rest).is_file():
            raise FileNotFoundError(f"npz source {rest} not found")
        with np.load(rest) as npz:
            if "arr_0" not in npz.files:
                raise ValueError(f"{rest}: no arr_0 (uint8 NHWC images)")
            images = npz["arr_0"]
            labels = npz["arr_1"] if "arr_1" in npz.files else np.zeros(len(images), np.int64)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"npz {rest}: arr_0 must be uint8 (N, H, W[, 1|3|4]); got {images.dtype} "
                             f"{tuple(images.shape)}")
        return ArraySource(images, labels, int(labels.max()) + 1 if len(labels) else 0, f"npz {rest}")
    raise ValueError(f"--source {spec!r}: expected imagefolder:DIR, fashion_mnist[:SPLIT], cifar10[:SPLIT] or npz:FILE")
