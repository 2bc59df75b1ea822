"""Metrics in two steps: reference statistics once, then sample statistics streamed batch by batch.

A reference npz holds `mu`, `sigma` (pool features) and optionally `mu_s`, `sigma_s` (spatial), `arr_0`
(uint8 NHWC images, ADM reference batches), `pool_features` (for precision/recall) and `feature_net`.
ADM `VIRTUAL_*.npz` batches and EDM `mu/sigma` npz files are read as they are.
"""

from pathlib import Path

import numpy as np
import torch

from evaluation.frechet import FeatureStats, frechet_distance
from evaluation.inception_score import inception_score
from evaluation.precision_recall import precision_recall
from utils.atomic import atomic_savez

PR_FEATURES = 10_000  # precision/recall use up to this many feature vectors per side


class SampleFeatures:
    """Accumulates features of a stream of uint8 NCHW batches (and their requested labels, if any)."""

    def __init__(self, feature_net, keep_for_pr: int = PR_FEATURES):
        self.net = feature_net
        self.pool = FeatureStats(feature_net.dims["pool"], keep_features=keep_for_pr > 0, max_kept=keep_for_pr)
        self.spatial = FeatureStats(feature_net.dims["spatial"]) if "spatial" in feature_net.dims else None
        self.logits: list[torch.Tensor] = []
        self.correct, self.labelled = 0, 0

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        feats = self.net(images)
        self.pool.add(feats["pool"])
        if self.spatial is not None:
            self.spatial.add(feats["spatial"])
        self.logits.append(feats["logits"].cpu())
        if labels is not None and self.net.predicts_dataset_labels:
            self.correct += (feats["logits"].argmax(1).cpu() == labels.cpu()).sum().item()
            self.labelled += len(labels)

    def merge(self, other: "SampleFeatures") -> None:
        self.pool.merge(other.pool)
        if self.spatial is not None:
            self.spatial.merge(other.spatial)
        self.logits.extend(other.logits)
        self.correct += other.correct
        self.labelled += other.labelled

    def drop_net(self) -> "SampleFeatures":
        """Detach the network so the statistics can be pickled across processes."""
        self.net = None
        return self


def save_reference(stats: SampleFeatures, feature_net_name: str, path: Path) -> None:
    mu, sigma = stats.pool.mean_cov()
    arrays = {"mu": mu, "sigma": sigma, "pool_features": stats.pool.features().numpy(),
              "feature_net": np.array(feature_net_name)}
    if stats.spatial is not None:
        arrays["mu_s"], arrays["sigma_s"] = stats.spatial.mean_cov()
    atomic_savez(path, **arrays)


def load_reference(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} not found")
    with np.load(path, allow_pickle=False) as data:
        ref = {k: data[k] for k in data.files}
    if "mu" not in ref or "sigma" not in ref:
        raise ValueError(f"{path}: a reference npz needs keys mu and sigma (has {sorted(ref)})")
    return ref


def compute_metrics(sample: SampleFeatures, ref: dict, ref_pool_features: torch.Tensor | None) -> dict:
    """FID-style distance, sFID, IS, precision/recall, class accuracy: whatever the inputs allow."""
    mu, sigma = sample.pool.mean_cov()
    out = {"num_samples": sample.pool.n, "fd": frechet_distance(mu, sigma, ref["mu"], ref["sigma"])}
    if sample.spatial is not None and "mu_s" in ref:
        mu_s, sigma_s = sample.spatial.mean_cov()
        out["sfid"] = frechet_distance(mu_s, sigma_s, ref["mu_s"], ref["sigma_s"])
    out["is"] = inception_score(torch.cat(sample.logits))
    if ref_pool_features is not None and len(ref_pool_features) and sample.pool.kept:
        n = min(len(ref_pool_features), len(sample.pool.features()))
        out["precision"], out["recall"] = precision_recall(ref_pool_features[:n], sample.pool.features()[:n])
    if sample.labelled:
        out["class_accuracy"] = sample.correct / sample.labelled
    return out
