"""Evaluation drivers: reference statistics for a source, metrics of a checkpoint (generated in-process,
nothing written to disk) or of an existing folder / npz of images."""

from pathlib import Path
from typing import Iterator

import torch

from dataio.image_io import to_uint8
from dataio.image_sources import open_source, uint8_batches
from evaluation.config import EvalConfig
from evaluation.metrics import SampleFeatures, compute_metrics

ImageBatch = tuple[torch.Tensor, torch.Tensor | None]  # uint8 (N, C, H, W), labels (N,) or None


def build_feature_net(cfg: EvalConfig, device, data_dir: str | None = None):
    if cfg.features == "fmnist_classifier":
        from evaluation.fmnist_features import FashionFeatures, load_or_train

        return FashionFeatures(load_or_train(data_dir)).to(device)
    from evaluation.inception import InceptionFeatures, resolve_weights

    return InceptionFeatures(resolve_weights(cfg.inception)).to(device)


def source_batches(source: str, batch: int) -> Iterator[ImageBatch]:
    """Reference or sample images of a source spec (dataio/image_sources.py; the split defaults to test)."""
    return uint8_batches(open_source(source, default_split="test"), batch)


def collect_features(feature_net, batches: Iterator[ImageBatch], keep_for_pr: int, device) -> SampleFeatures:
    stats = SampleFeatures(feature_net, keep_for_pr)
    for images, labels in batches:
        stats.add(images.to(device), labels)
    return stats


def reference_pool_features(ref: dict, feature_net, cfg: EvalConfig, device) -> torch.Tensor | None:
    """Precision/recall need reference features: stored ones, or computed from ADM's arr_0 images."""
    if cfg.pr_features <= 0:
        return None
    if "pool_features" in ref:
        return torch.from_numpy(ref["pool_features"]).float()
    if "arr_0" in ref:
        images = torch.from_numpy(ref["arr_0"][:cfg.pr_features]).permute(0, 3, 1, 2)
        batches = ((images[i:i + cfg.batch_gpu], None) for i in range(0, len(images), cfg.batch_gpu))
        return collect_features(feature_net, batches, cfg.pr_features, device).pool.features()
    return None


def generated_batches(net, decoder, cfg: EvalConfig, seeds: list[int], device) -> Iterator[ImageBatch]:
    from diffusion.generation import generate, labels_for_seeds

    labels = labels_for_seeds(seeds, net.backbone.spec.num_classes)
    for _, chunk_labels, images in generate(net, decoder, seeds, labels, cfg.sampling, cfg.batch_gpu, device):
        yield torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2), chunk_labels


def metrics_table(metrics: dict, feature_net_name: str) -> str:
    """Markdown table; the Fréchet distance is called FID only with the Inception features."""
    names = {"fd": "FID" if feature_net_name == "inception" else "FD_fmnist", "sfid": "sFID",
             "is": "IS" if feature_net_name == "inception" else "IS_fmnist", "precision": "precision",
             "recall": "recall", "class_accuracy": "class accuracy", "num_samples": "samples"}
    rows = [f"| {names.get(k, k)} | {v:.4f} |" if isinstance(v, float) else f"| {names.get(k, k)} | {v} |"
            for k, v in metrics.items()]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


class ProcessSplit:
    """Which share of the work this process does; one process when `state` is None (e.g. the benchmark)."""

    def __init__(self, state=None):
        self.state = state
        self.index = state.process_index if state is not None else 0
        self.count = state.num_processes if state is not None else 1

    def share(self, items):
        """Every count-th item, from this process's index on."""
        return items[self.index::self.count] if isinstance(items, list) else (
            x for i, x in enumerate(items) if i % self.count == self.index)

    def gather(self, stats: SampleFeatures) -> SampleFeatures | None:
        """Collective: every process's features merged on the main process; None on the others."""
        if self.count == 1:
            return stats
        from accelerate.utils import gather_object

        parts = gather_object([stats.drop_net()])
        if not self.state.is_main_process:
            return None
        total = parts[0]
        for part in parts[1:]:
            total.merge(part)
        return total


def model_features(net, decoder, cfg: EvalConfig, feature_net, device, split: ProcessSplit,
                   grid_path: Path | None = None) -> SampleFeatures | None:
    """Generate cfg.num_samples images (seeds seed_start..; spread over the processes) and collect their features.
    With grid_path, the main process also saves its first 100 images as a PNG grid (a class per column)."""
    seeds = split.share(list(range(cfg.seed_start, cfg.seed_start + cfg.num_samples)))
    batches = generated_batches(net, decoder, cfg, seeds, device)
    if grid_path is not None and split.index == 0:
        batches = _saving_first(batches, 100, grid_path, net.backbone.spec.num_classes or None)
    return split.gather(collect_features(feature_net, batches, cfg.pr_features // split.count, device))


def source_features(source: str, cfg: EvalConfig, feature_net, device, split: ProcessSplit,
                    keep_for_pr: int | None = None) -> SampleFeatures | None:
    """Features of a source's images, its batches spread over the processes."""
    keep = cfg.pr_features // split.count if keep_for_pr is None else keep_for_pr
    batches = split.share(source_batches(source, cfg.batch_gpu))
    return split.gather(collect_features(feature_net, batches, keep, device))


def score(stats: SampleFeatures, ref: dict, feature_net, cfg: EvalConfig, device) -> dict:
    return compute_metrics(stats, ref, reference_pool_features(ref, feature_net, cfg, device))


def evaluate_snapshot(path, cfg: EvalConfig, feature_net, ref: dict, ref_pool: torch.Tensor | None, device,
                      grid_path: Path | None = None) -> dict:
    """Metrics of one snapshot in this process, through the same driver as eval_latent.py (the benchmark keeps
    the reference's precision/recall features, `ref_pool`, across snapshots)."""
    from diffusion.network import load_for_sampling

    return evaluate_network(*load_for_sampling(path, device), cfg, feature_net, ref, ref_pool, device, grid_path)


def evaluate_network(net, meta: dict, cfg: EvalConfig, feature_net, ref: dict, ref_pool: torch.Tensor | None, device,
                     grid_path: Path | None = None) -> dict:
    """Metrics of a network already in memory (e.g. a post-hoc EMA reconstruction) with its snapshot metadata."""
    from dataio.autoencoder import Decoder

    stats = model_features(net, Decoder(meta["data"], device), cfg, feature_net, device, ProcessSplit(), grid_path)
    return compute_metrics(stats, ref, ref_pool)


def _saving_first(batches: Iterator[ImageBatch], count: int, path: Path, cols: int | None) -> Iterator[ImageBatch]:
    """Pass batches through; once they are used up, save the first `count` images as one grid."""
    from dataio.image_io import grid_image, save_png_atomic

    kept = []
    for images, labels in batches:
        room = count - sum(len(k) for k in kept)
        if room > 0:
            kept.append(images[:room])
        yield images, labels
    save_png_atomic(grid_image(torch.cat(kept).permute(0, 2, 3, 1).numpy(), cols=cols), Path(path))
