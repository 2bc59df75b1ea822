"""Metrics in two steps: reference statistics once, then sample statistics streamed batch by batch.

A reference npz holds `mu`, `sigma` (pool features) and optionally `mu_s`, `sigma_s` (spatial), `arr_0`
(uint8 NHWC images, ADM reference batches), `pool_features` (for precision/recall) and `feature_net`.
ADM `VIRTUAL_*.npz` batches and EDM `mu/sigma` npz files are read as they are.
"""

import zipfile
import zlib
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


def load_reference(path: str | Path, feature_net=None) -> dict:
    """Reference statistics, checked whole before any sample is generated: a readable npz whose arrays have the
    shapes the metrics need, all finite, and (given the feature network) in that network's feature space. Every
    problem is one ValueError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("one bare array, not an npz of named statistics")
        with data:
            ref = {k: data[k] for k in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path}: not a readable reference npz ({type(err).__name__}: {err})") from None
    problem = reference_problem(ref) or (feature_space_problem(ref, feature_net) if feature_net else None)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return ref


def reference_problem(ref: dict) -> str | None:
    """What is wrong with the arrays of a reference npz (keys and shapes named), or None."""
    if "mu" not in ref or "sigma" not in ref:
        return f"a reference npz needs keys mu and sigma (has {', '.join(sorted(ref)) or 'none'})"
    for mean_key, cov_key in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if (mean_key in ref) != (cov_key in ref):
            return f"{mean_key} and {cov_key} go together (has only {mean_key if mean_key in ref else cov_key})"
        if mean_key not in ref:
            continue
        mean, cov = ref[mean_key], ref[cov_key]
        if mean.ndim != 1 or cov.shape != (len(mean), len(mean)):
            return f"{mean_key} {mean.shape} and {cov_key} {cov.shape} are not a (D,) mean and its (D, D) covariance"
    if "pool_features" in ref and (ref["pool_features"].ndim != 2 or ref["pool_features"].shape[1] != len(ref["mu"])):
        return f"pool_features {ref['pool_features'].shape} are not (N, {len(ref['mu'])}) like mu"
    if "arr_0" in ref and (ref["arr_0"].ndim != 4 or ref["arr_0"].shape[-1] not in (1, 3)):
        return f"arr_0 {ref['arr_0'].shape} is not a batch of NHWC images"
    for key in ("mu", "sigma", "mu_s", "sigma_s", "pool_features"):
        if key in ref and not np.issubdtype(ref[key].dtype, np.number):
            return f"{key} holds {ref[key].dtype} values, not numbers"
        if key in ref and not np.isfinite(ref[key]).all():
            return f"{key} holds {int((~np.isfinite(ref[key])).sum())} non-finite values"
    return None


def feature_space_problem(ref: dict, feature_net) -> str | None:
    """Whether the statistics are in this feature network's space (dimension, and name when stored)."""
    stored = str(ref["feature_net"]) if "feature_net" in ref else None
    if stored is not None and stored != feature_net.name:
        return f"statistics of {stored} features, but the evaluation config's network is {feature_net.name}"
    dim, expected = len(ref["mu"]), feature_net.dims["pool"]
    if dim != expected:
        return (f"statistics of {dim}-d features, but the config's feature network {feature_net.name} gives "
                f"{expected}-d (features: key of the evaluation config)")
    if "mu_s" in ref and "spatial" in feature_net.dims and len(ref["mu_s"]) != feature_net.dims["spatial"]:
        return f"spatial statistics of {len(ref['mu_s'])}-d features, {feature_net.name} gives {feature_net.dims['spatial']}-d"
    return None


def compute_metrics(sample: SampleFeatures, ref: dict, ref_pool_features: torch.Tensor | None) -> dict:
    """FID-style distance, sFID, IS, precision/recall, class accuracy: whatever the inputs allow."""
    mu, sigma = sample.pool.mean_cov()
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"the features of the {sample.pool.n} generated samples are not finite (a diverged model "
                         "or sampler); no metric is computed from them")
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
    bad = [key for key, value in out.items() if isinstance(value, float) and not np.isfinite(value)]
    if bad:  # a metric that is not finite is an error, never a result
        raise ValueError(f"{', '.join(bad)} not finite ({', '.join(f'{k} {out[k]}' for k in bad)}): the generated "
                         "samples or their features hold non-finite values")
    return out
