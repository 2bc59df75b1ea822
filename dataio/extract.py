"""Offline VAE latent extraction into an LMDB store; resumable, one or many processes.

Each process encodes the indices i ≡ rank (mod world) that the store does not hold yet, so re-running the
same command after an interruption finishes the job without writing any record twice. Rank 0 writes the
metadata record last; readers refuse a store without it.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dataio.autoencoder import encode_moments, load_vae, scaling_factor
from dataio.image_sources import adm_center_crop, open_source
from dataio.latent_store import LatentWriter

DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class ExtractOptions:
    source: str
    out: str
    vae: str
    resolution: int = 256
    xflip: bool = False
    batch_size: int = 32
    dtype: str = "float16"
    stop_after_batches: int | None = None  # leave the job unfinished after this many batches (incremental runs)


def check_compatible(existing: dict | None, wanted: dict, out: str) -> None:
    """A resumed extraction must use the same settings as the one that started the store."""
    if existing is None:
        return
    for key in ("count", "vae", "resolution", "xflip", "dtype", "source"):
        if existing.get(key) != wanted.get(key):
            raise ValueError(f"{out}: existing store has {key}={existing.get(key)!r}, this run {wanted.get(key)!r}")


def load_batch(source, indices: list[int], resolution: int) -> tuple[torch.Tensor, list[int]]:
    """-> images (B, 3, R, R) in [-1, 1], labels."""
    arrays, labels = [], []
    for i in indices:
        image, label = source.load(i)
        arrays.append(adm_center_crop(image, resolution))
        labels.append(label)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, R, R) uint8
    return pixels.float() / 127.5 - 1, labels


def encode_batch(vae, images: torch.Tensor, xflip: bool, dtype) -> np.ndarray:
    """-> (B, copies, 2C, h, w) moments; copy 1 is the encoding of the mirrored image."""
    copies = [encode_moments(vae, images)]
    if xflip:
        copies.append(encode_moments(vae, images.flip(-1)))
    return torch.stack(copies, dim=1).cpu().numpy().astype(dtype)


def extract(opts: ExtractOptions, state) -> dict:
    """Encode what is missing; returns the metadata (complete only when every record exists)."""
    if opts.dtype not in DTYPES:
        raise ValueError(f"--dtype {opts.dtype!r}: choose float16 or float32")
    source = open_source(opts.source)
    vae = load_vae(opts.vae, state.device)
    writer = LatentWriter(opts.out)
    meta = {"count": len(source), "vae": opts.vae, "resolution": opts.resolution, "xflip": opts.xflip,
            "dtype": opts.dtype, "source": opts.source, "num_classes": source.num_classes,
            "scaling_factor": scaling_factor(vae)}
    check_compatible(writer.meta(), meta, opts.out)
    done = writer.existing_indices()
    todo = [i for i in range(state.process_index, len(source), state.num_processes) if i not in done]
    bar = tqdm(total=len(todo), unit="img", disable=not state.is_main_process, desc=f"encode {source.description}")
    shape = None
    for batch_no, start in enumerate(range(0, len(todo), opts.batch_size)):
        if opts.stop_after_batches is not None and batch_no >= opts.stop_after_batches:
            break
        indices = todo[start:start + opts.batch_size]
        images, labels = load_batch(source, indices, opts.resolution)
        moments = encode_batch(vae, images.to(state.device), opts.xflip, DTYPES[opts.dtype])
        writer.put_batch(indices, moments, labels)
        shape = list(moments.shape[1:])
        bar.update(len(indices))
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process and len(writer.existing_indices()) == len(source):
        if shape is None:  # everything was already encoded: probe one image for the record shape
            shape = list(encode_batch(vae, load_batch(source, [0], opts.resolution)[0].to(state.device),
                                      opts.xflip, DTYPES[opts.dtype]).shape[1:])
        meta.update(shape=shape, complete=True)
        writer.put_meta(meta)
    state.wait_for_everyone()
    final = writer.meta() or {**meta, "complete": False}
    writer.close()
    return final
