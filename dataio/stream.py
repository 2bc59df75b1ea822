"""Deterministic shuffled batches with a resumable position, independent of the number of processes.

Epoch e visits the items in the permutation drawn from (seed, e). The global batch at position p is the
next `batch_size` entries of that endless sequence; process r takes its contiguous slice. The position
(global samples consumed) is the whole state, so resume is exact and GPU-count independent.
"""

import torch


class ShuffledIndexStream:
    def __init__(self, num_items: int, seed: int, rank: int = 0, num_ranks: int = 1, xflip: bool = False):
        if num_items <= 0:
            raise ValueError("dataset is empty")
        self.num_items, self.seed, self.rank, self.num_ranks, self.xflip = num_items, seed, rank, num_ranks, xflip
        self.position = 0
        self._epoch, self._perm, self._flip = -1, None, None

    @classmethod
    def resumed(cls, num_items: int, seed: int, rank: int, num_ranks: int, xflip: bool,
                state: dict | None) -> "ShuffledIndexStream":
        """A stream at the checkpoint's position (`state`), or at the start when None."""
        stream = cls(num_items, seed, rank, num_ranks, xflip)
        if state is not None:
            stream.load_state_dict(state)
        return stream

    def _load_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=gen)
            self._flip = torch.rand(self.num_items, generator=gen) < 0.5
            self._epoch = epoch

    def _global_slice(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, flip = [], []
        while count > 0:
            epoch, offset = divmod(start, self.num_items)
            self._load_epoch(epoch)
            take = min(count, self.num_items - offset)
            idx.append(self._perm[offset:offset + take])
            flip.append(self._flip[offset:offset + take])
            start, count = start + take, count - take
        return torch.cat(idx), torch.cat(flip)

    def next_indices(self, batch_gpu: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's (indices, flip flags) for the next global batch of batch_gpu × num_ranks."""
        start = self.position + self.rank * batch_gpu
        idx, flip = self._global_slice(start, batch_gpu)
        self.position += batch_gpu * self.num_ranks
        return idx, flip & self.xflip

    def state_dict(self) -> dict:
        return {"position": self.position, "num_items": self.num_items, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["num_items"] != self.num_items:
            raise ValueError(f"resume: the dataset has {self.num_items} items but the checkpoint saw "
                             f"{state['num_items']}")
        self.position = state["position"]


class InMemoryBatches:
    """Batches from an in-memory image tensor, moved to `device`."""

    def __init__(self, data, stream: ShuffledIndexStream, batch_gpu: int, device):
        self.data, self.stream, self.batch_gpu, self.device = data, stream, batch_gpu, device

    def next(self, latent_noise=None, copy_choice=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels need no draws of the step (the stream holds the flips); the arguments match LatentBatches."""
        idx, flip = self.stream.next_indices(self.batch_gpu)
        # the stream's draws live on the CPU; the images may already be in device memory (benchmarks/throughput.py)
        idx, flip = idx.to(self.data.images.device), flip.to(self.data.images.device)  # (B,), (B,)
        images = self.data.images[idx]  # (B, C, H, W)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        labels = self.data.labels[idx]  # (B,)
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return self.stream.state_dict()
