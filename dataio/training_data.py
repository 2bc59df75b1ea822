"""Training data: Fashion-MNIST or CIFAR-10 (pixels, in memory) or latents from an LMDB store / shards.

`build_training_data` returns batches (next() -> (x, labels) on the device; state_dict() -> data position)
plus what the trainer checks against the model and records in snapshots for decoding.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from dataio.image_sources import in_memory_images, open_source
from dataio.stream import InMemoryBatches, ShuffledIndexStream

SOURCES = ("fashion_mnist", "cifar10", "lmdb", "wds")


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


@dataclass
class TrainingData:
    batches: object  # InMemoryBatches | LatentBatches
    sample_shape: tuple[int, int, int]
    num_classes: int
    description: str
    decode_info: dict  # what decoding needs: {"space": "pixel"} or the VAE id and latent scaling


def pixel_images(source_name: str, split: str, directory: str | None) -> InMemoryImages:
    """The pixel datasets, in memory as [-1, 1] float tensors, through the one source parser."""
    source = open_source(f"{source_name}:{split}:{directory or ''}")
    images, labels = in_memory_images(source)
    return InMemoryImages(images, labels, source.num_classes, source.description)


PIXEL_SOURCES = ("fashion_mnist", "cifar10")


def build_training_data(data_cfg, seed: int, rank: int, num_ranks: int, batch_gpu: int, device,
                        data_state: dict | None) -> TrainingData:
    """`data_state` is the checkpoint's data position (None for a fresh run)."""
    if data_cfg.source in PIXEL_SOURCES:
        data = pixel_images(data_cfg.source, "train", data_cfg.path)
        stream = ShuffledIndexStream.resumed(len(data), seed, rank, num_ranks, data_cfg.xflip, data_state)
        return TrainingData(InMemoryBatches(data, stream, batch_gpu, device), tuple(data.images.shape[1:]),
                            data.num_classes, data.description, {"space": "pixel", "source": data_cfg.source})
    if data_cfg.source in ("lmdb", "wds"):
        if data_cfg.path is None:
            raise DataMismatchError(f"data.path: required for data.source {data_cfg.source}")
        return latent_training_data(data_cfg, seed, rank, num_ranks, batch_gpu, device, data_state)
    raise DataMismatchError(f"data.source: unknown {data_cfg.source!r}; choose from {list(SOURCES)}")


def latent_training_data(data_cfg, seed, rank, num_ranks, batch_gpu, device, data_state) -> TrainingData:
    from dataio.latent_batches import LatentBatches, LatentRecordsByFlip, StreamBatchSampler, loader_kwargs
    from dataio.latent_store import LatentLMDB
    from dataio.shards import iterate_shards, read_index

    kwargs = loader_kwargs(data_cfg.num_workers, device)
    store = LatentLMDB(data_cfg.path) if data_cfg.source == "lmdb" else None
    meta = store.meta if store is not None else read_index(data_cfg.path)["meta"]
    if data_cfg.xflip and not meta["xflip"]:
        raise DataMismatchError(f"data.xflip: {data_cfg.path} was extracted without --xflip copies")
    start = data_state["position"] if data_state is not None else 0
    if store is not None:
        stream = ShuffledIndexStream.resumed(len(store), seed, rank, num_ranks, data_cfg.xflip, data_state)
        loader = torch.utils.data.DataLoader(LatentRecordsByFlip(store), batch_sampler=StreamBatchSampler(stream, batch_gpu),
                                             **kwargs)
    else:
        stream = None
        pipeline = iterate_shards(data_cfg.path, True, data_cfg.shuffle_buffer, seed + start, rank)
        loader = torch.utils.data.DataLoader(pipeline, batch_size=batch_gpu, **kwargs)
    channels = meta["shape"][1] // 2
    batches = LatentBatches(loader, meta["scaling_factor"], device, stream, start, batch_gpu * num_ranks,
                            data_cfg.xflip)
    return TrainingData(batches, (channels, meta["shape"][2], meta["shape"][3]), meta["num_classes"],
                        f"{data_cfg.source} {data_cfg.path} {meta['count']} latents {channels}x{meta['shape'][2]}x"
                        f"{meta['shape'][3]}", {"space": "latent", "vae": meta["vae"],
                                                "scaling_factor": meta["scaling_factor"], "source": data_cfg.source})


def optimal_loss_reference(data_cfg, max_images: int, seed: int = 0) -> tuple[torch.Tensor, str, Path]:
    """The training distribution as a tensor, for the ideal-denoiser estimate of J*(σ) (diffusion/optimal_loss.py):
    -> (images (N, C, H, W) float32 in the model's space, a description, the cache file beside the data).

    Pixels: the whole training split, with the mirrored copies when data.xflip is on (they are part of what the
    model is trained on). Latents (LMDB): a random subset of max_images records, each one posterior draw
    z = (mean + std·ε)·scaling with one of its stored copies. The cache file lives beside an LMDB store and under
    the cache root for the built-in pixel sources (their directories may be read-only)."""
    from utils.cache import cache_root

    gen = torch.Generator().manual_seed(seed)
    if data_cfg.source in PIXEL_SOURCES:
        images = pixel_images(data_cfg.source, "train", data_cfg.path).images  # (N, C, H, W)
        if data_cfg.xflip:
            images = torch.cat([images, images.flip(-1)])
        where = cache_root() / "optimal_loss" / f"{data_cfg.source}-{content_tag(images)}"
        return images, f"{data_cfg.source} train{' + flips' if data_cfg.xflip else ''}", where
    if data_cfg.source != "lmdb":
        raise DataMismatchError(f"data.source {data_cfg.source}: J* needs random access to the data (pixels or "
                                "lmdb); train the excess_loss strategy from the LMDB store the shards came from")
    from dataio.autoencoder import sample_latents
    from dataio.latent_store import LatentLMDB

    store = LatentLMDB(data_cfg.path)
    picks = torch.randperm(len(store), generator=gen)[:max_images].tolist()
    moments = []
    for i in picks:
        copies, _ = store[i]  # (copies, 2C, h, w)
        copy = int(torch.randint(copies.shape[0] if data_cfg.xflip else 1, (1,), generator=gen))
        moments.append(copies[copy])
    moments = torch.stack(moments)  # (K, 2C, h, w)
    eps = torch.randn((len(moments), moments.shape[1] // 2, *moments.shape[2:]), generator=gen)
    latents = sample_latents(moments, store.meta["scaling_factor"], eps=eps)
    return latents, f"{len(picks)} of {len(store)} latents of {data_cfg.path}", Path(str(data_cfg.path) + ".optimal_loss")


def content_tag(images: torch.Tensor) -> str:
    """Short fingerprint of a tensor's content (shape, sums, a strided sample), naming derived cache files."""
    import hashlib

    probe = images.reshape(-1)[:: max(1, images.numel() // 65536)].contiguous()
    digest = hashlib.sha1(str((tuple(images.shape), float(images.double().sum()))).encode() + probe.numpy().tobytes())
    return digest.hexdigest()[:12]


def check_matches_model(data: TrainingData, model_cfg) -> None:
    """Fail before training when the data shape or classes disagree with the model config."""
    expected = (model_cfg.in_channels, model_cfg.resolution, model_cfg.resolution)
    if tuple(data.sample_shape) != expected:
        raise DataMismatchError(f"data {data.description}: sample shape {tuple(data.sample_shape)} does not match "
                                f"the model (model.in_channels, model.resolution) = {expected}")
    if model_cfg.num_classes and data.num_classes != model_cfg.num_classes:
        raise DataMismatchError(f"data {data.description}: {data.num_classes} classes but model.num_classes = "
                                f"{model_cfg.num_classes}")
