"""Dispersive loss (Wang & He 2025, "Diffuse and Disperse", arXiv 2506.09027): a regulariser that spreads one
block's representations of a batch apart in the hidden space, with no positive pairs and no parameters.

The InfoNCE-L2 variant the authors train with (their paper and released code): with z_i the representation of
sample i flattened to D' numbers,

    L_disp = log mean_{i,j} exp(−‖z_i − z_j‖² / (τ·D'))

over the full N × N matrix of the micro-batch, i = j included (those terms are exp(0) = 1, as in the authors'
JAX code, which their PyTorch port matches by appending N zeros to the pairwise distances). Total loss =
diffusion loss + λ·L_disp. Minimising it makes the pairwise distances large relative to τ·D'.

Which representation (models/maskdit.py, `repr_block`): the output of one encoder block. Where every sample's
block sees all L tokens in their places (DiT, the unmasked finetune, a block outside TREAD's routed range) it is
flattened to (N, L·D), as in the paper. Where the tokens differ per sample (MaskDiT's encoder sees a different
visible set in each sample; a routed block sees a different subset), position-by-position distances would compare
unrelated patches, so z_i is the mean over the tokens sample i's block sees, (N, D): an image-level descriptor
that is comparable across samples whatever the visible set, which is what the loss's logic (separate the
samples' representations) needs. D' is then D, so the distance stays a per-number mean square in both cases.

Pairs are formed within each process's micro-batch, as the authors' code does on each device: no all-gather
inside the compiled step. So one process with micro-batch B equals N processes with micro-batch B each, not
one process with N·B; the micro-batch must hold at least 2 samples (with one, the loss is a constant 0).
"""

import math
from dataclasses import dataclass

import torch


def dispersive_loss(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z (N, D') representations -> () L_disp = log mean_{i,j} exp(−‖z_i − z_j‖² / (τ·D')), in float32.

    Squared distances from the Gram matrix (‖a‖² + ‖b‖² − 2a·b, clamped at 0 against rounding): N × N memory,
    not N × N × D'. log-mean-exp through logsumexp, so large distances do not underflow to log(0)."""
    z = z.float().flatten(1)  # (N, D')
    n, dim = z.shape
    sq_norm = z.square().sum(1)  # (N,)
    # Wang & He 2025, InfoNCE-L2 variant: D_ij = ‖z_i − z_j‖² / D', the full matrix with its zero diagonal
    dist = (sq_norm[:, None] + sq_norm[None, :] - 2 * (z @ z.T)).clamp_min(0) / dim  # (N, N)
    dist = dist * (1 - torch.eye(n, device=z.device, dtype=z.dtype))  # exact zeros on the diagonal, i = j
    return torch.logsumexp(-dist.flatten() / temperature, 0) - math.log(n * n)


@dataclass(frozen=True)
class Dispersive:
    """The dispersive term of a training objective: λ, τ, and the 0-based encoder block whose output it reads."""

    weight: float  # λ
    temperature: float  # τ
    block: int  # index into the backbone's encoder blocks

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D') -> () L_disp of this micro-batch."""
        return dispersive_loss(z, self.temperature)


def repr_block_index(block_fraction: float, depth: int) -> int:
    """loss.repr.block_fraction of an encoder of `depth` blocks -> the 0-based block index: the output of block
    round(fraction × depth), counted from 1 (0.25 of DiT-XL's 28 blocks: block 7, the authors' depth // 4;
    1.0: the last encoder block, as the PyTorch port)."""
    return min(depth, max(1, round(block_fraction * depth))) - 1
