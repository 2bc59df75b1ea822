"""The standard TF-ported Inception-v3 (torch-fidelity's port of inception-2015-12-05), three feature sets:

pool    (N, 2048)  pool_3, for FID and precision/recall
logits  (N, 1008)  unbiased logits (pool_3 × softmax weights, no bias, as ADM), for IS
spatial (N, 2023)  mixed_6/conv (= Mixed_6d.branch1x1 after ReLU), first 7 channels of 17×17, for sFID
"""

import os
import urllib.request
from pathlib import Path

import torch
from torch import nn

from utils.cache import cache_root

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_NAME
ENV_VAR = "MASKDIT_INCEPTION"


def default_weights_path() -> Path:
    return cache_root() / WEIGHTS_NAME


def resolve_weights(explicit: str | None) -> Path:
    """--inception path, else $MASKDIT_INCEPTION, else the cache (downloaded into it when online)."""
    for candidate in (explicit, os.environ.get(ENV_VAR)):
        if candidate:
            if not Path(candidate).is_file():
                raise FileNotFoundError(f"Inception weights {candidate} not found")
            return Path(candidate)
    cached = default_weights_path()
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    try:
        urllib.request.urlretrieve(WEIGHTS_URL, tmp)
    except OSError:
        raise FileNotFoundError(
            f"Inception weights not available offline: put torch-fidelity's {WEIGHTS_NAME} at {cached} "
            f"(or pass --inception FILE / set {ENV_VAR})") from None
    os.replace(tmp, cached)
    return cached


class InceptionFeatures(nn.Module):
    name = "inception"
    dims = {"pool": 2048, "logits": 1008, "spatial": 2023}
    predicts_dataset_labels = False

    def __init__(self, weights_path: str | Path):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        check_loads_without_code(weights_path)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(weights_path))
        self._spatial = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, args, out) -> None:
        self._spatial = out

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (N, C, H, W), C = 1 or 3 -> feature dict (float32)."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)  # grayscale -> RGB
        pool, logits = self.net(images)
        spatial = self._spatial[:, :7].permute(0, 2, 3, 1).reshape(len(images), -1)  # NHWC order as ADM
        return {"pool": pool.float(), "logits": logits.float(), "spatial": spatial.float()}


def check_loads_without_code(path: str | Path) -> None:
    """torch-fidelity unpickles the weights file fully; refuse one that holds anything but tensors and plain
    values (a crafted pickle would run code there). A file that loads with weights_only=True is such a file."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure means: not a plain weights file
        raise ValueError(f"{path}: not a plain Inception weights file (refused: {str(err).splitlines()[0][:160]})") from None
