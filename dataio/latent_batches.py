"""Training batches of latents from the LMDB store or from webdataset shards.

Both readers deliver stored posterior moments (copies, 2C, h, w); on the device each sample is re-drawn
as z = (mean + std·ε)·scaling_factor (the scaling factor recorded at extraction), using the mirrored copy
when a flip is drawn. LMDB batches follow the resumable ShuffledIndexStream exactly (position counts the
batches actually consumed, not those prefetched); shards are resampled at random (resume restarts the
stream with a seed derived from the step, so it is reproducible but not the same sample order).
"""

import torch

from dataio.autoencoder import sample_latents
from dataio.latent_store import LatentLMDB
from dataio.stream import ShuffledIndexStream


class LatentRecordsByFlip(torch.utils.data.Dataset):
    """The LMDB latent records as a Dataset keyed by (index, flip): the stored moments of the flipped copy when
    flip is set (and the record has one), else of the original."""

    def __init__(self, store: LatentLMDB):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key
        moments, label = self.store[index]
        return moments[1 if flip and moments.shape[0] > 1 else 0], label


class StreamBatchSampler(torch.utils.data.Sampler):
    """Endless batches of (index, flip) keys from a ShuffledIndexStream."""

    def __init__(self, stream: ShuffledIndexStream, batch_gpu: int):
        self.stream, self.batch_gpu = stream, batch_gpu

    def __iter__(self):
        while True:
            idx, flip = self.stream.next_indices(self.batch_gpu)
            yield list(zip(idx.tolist(), flip.tolist()))


def loader_kwargs(num_workers: int, device) -> dict:
    return {"num_workers": num_workers, "pin_memory": torch.device(device).type == "cuda",
            "persistent_workers": num_workers > 0, "prefetch_factor": 4 if num_workers > 0 else None}


class DataRecordError(ValueError):
    """A corrupt or missing LMDB record / shard member met mid-run (one line naming it)."""


def record_error_line(err: Exception) -> str:
    """The line naming the LMDB key or shard in a reader error, also when a DataLoader worker wrapped it in
    its own multi-line traceback."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "LMDB " in line or "shard " in line]
    return (named or lines or [type(err).__name__])[-1].removeprefix("ValueError: ").removeprefix("KeyError: ")


class LatentBatches:
    """next() -> (z (B, C, h, w) on device, labels (B,)); state_dict() -> the data position."""

    def __init__(self, loader, scale: float, device, stream: ShuffledIndexStream | None, start: int,
                 global_batch: int, xflip: bool):
        self.iterator = iter(loader)
        self.scale, self.device, self.xflip = scale, device, xflip
        self.stream, self.start, self.global_batch = stream, start, global_batch
        self.consumed = 0

    def next(self, latent_noise: torch.Tensor, copy_choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent_noise (B, C, h, w) and copy_choice (B,) uniform come from the step's draws
        (diffusion/step_draws.py), so the batch does not depend on the process layout."""
        try:
            moments, labels = next(self.iterator)
        except (ValueError, KeyError, RuntimeError) as err:
            raise DataRecordError(record_error_line(err)) from None
        self.consumed += 1
        moments = moments.to(self.device, non_blocking=True)
        if moments.dim() == 5:  # shards keep every copy: choose the flip here
            copies = moments.shape[1] if self.xflip else 1
            copy = (copy_choice * copies).long().clamp_max(copies - 1)  # (B,)
            moments = moments[torch.arange(len(moments), device=self.device), copy]
        return sample_latents(moments, self.scale, eps=latent_noise), labels.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        if self.stream is None:
            return {"position": self.start + self.consumed * self.global_batch, "num_items": -1, "seed": -1}
        return {"position": self.start + self.consumed * self.global_batch, "num_items": self.stream.num_items,
                "seed": self.stream.seed}
