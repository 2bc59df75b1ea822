"""MaskDiT objective: EDM denoising loss on visible tokens + MAE reconstruction on masked tokens.

Loss is a small callable (net, images, labels, strategy, mask_ratio, draws) -> per-sample terms; the
trainer averages and back-propagates. The noise-level strategy chose σ (in `draws`, see
diffusion/step_draws.py) and gives the x0-space weight λ(σ).
"""

from dataclasses import dataclass

import torch

from diffusion.dispersive import Dispersive
from diffusion.self_alignment import SelfAlignment
from diffusion.step_draws import Draws
from models.embeddings import drop_labels
from models.masking import TokenMask, mask_from_noise, num_visible_tokens, patchify


@dataclass
class LossTerms:
    """Per-sample terms, each (N,) float32. `total` is what is optimised."""

    total: torch.Tensor
    denoise: torch.Tensor  # weighted DSM over visible tokens (× the strategy's p/q when it has one)
    mae: torch.Tensor  # MAE over masked tokens, not σ-weighted (zeros when nothing is masked; × p/q if any)
    sigma: torch.Tensor  # the σ each sample was trained at
    raw_denoise: torch.Tensor  # unweighted ||D - y||² over visible tokens: what strategies learn from
    repr: torch.Tensor  # the representation loss before its weight: dispersive (the micro-batch's value, repeated
    # per sample) or SRA's alignment (per sample); zeros when loss.repr.kind is none


def token_mean(per_token: torch.Tensor, token_weight: torch.Tensor | None, num_selected: int) -> torch.Tensor:
    """(N, L) values, (N, L) 0/1 weights selecting `num_selected` tokens of every sample (None: all L) -> (N,)
    mean over the selected tokens.

    The count is a Python int, not a reduction: every sample keeps the same number of tokens (models/masking.py),
    so summing a tensor of ones (or the 0/1 mask) would only recompute a known integer, and that persistent
    reduction is the kernel Triton 3.6 miscompiles ("operand does not dominate", issue #28). Bit-identical to
    dividing by the weights' sum: the same float sum divided by the same exact integer."""
    selected = per_token if token_weight is None else per_token * token_weight  # (N, L)
    return selected.sum(1) / num_selected


def per_token_sq_error(pred: torch.Tensor, target: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) pair -> (N, L) squared error averaged over channels and pixels of each patch."""
    return patchify((pred - target).square(), patch).mean(-1)


def mae_per_token(denoised: torch.Tensor, noisy: torch.Tensor, patch: int) -> torch.Tensor:
    """MAE auxiliary term (MaskDiT Eq. 4): predict the per-patch-normalised noisy input. -> (N, L).

    As in the reference, the prediction is the full preconditioned D, which at masked positions still holds
    c_skip·x: the noisy input leaks through the skip path (a quirk of the method, kept for fidelity)."""
    target = patchify(noisy, patch)  # (N, L, p*p*C)
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True)  # unbiased, as MAE's norm_pix_loss
    target = (target - mean) / (var + 1e-6).sqrt()
    return (patchify(denoised, patch) - target).square().mean(-1)  # (N, L)


class MaskDiTLoss:
    """EDM DSM + MAE. With mask_ratio 0 (finetune, DiT baseline) it is the plain EDM loss over all tokens."""

    def __init__(self, patch_size: int, num_tokens: int, mae_weight: float = 0.1, null_label: int | None = None,
                 dispersive: Dispersive | None = None, self_alignment: SelfAlignment | None = None):
        self.patch_size = patch_size
        self.num_tokens = num_tokens
        self.mae_weight = mae_weight
        self.null_label = null_label  # label dropout target; None for unconditional models
        # loss.repr (at most one): diffusion/dispersive.py, diffusion/self_alignment.py (a module with parameters:
        # TrainingObjective registers it)
        self.dispersive = dispersive
        self.self_alignment = self_alignment

    def repr_block(self) -> int | None:
        """The encoder block whose output the representation loss reads, or None."""
        if self.dispersive is not None:
            return self.dispersive.block
        return None if self.self_alignment is None else self.self_alignment.student_block

    def __call__(self, net, images: torch.Tensor, labels: torch.Tensor | None, strategy, mask_ratio: float,
                 draws: Draws) -> LossTerms:
        y = images.float()  # (N, C, H, W) clean data
        sigma = draws.sigma  # (N,)
        weight = strategy.loss_weight(sigma)  # (N,) x0-space λ(σ)
        noisy = y + draws.noise * sigma[:, None, None, None]  # (N, C, H, W)
        mask = self.make_mask(draws.mask_noise, mask_ratio)
        if labels is not None and self.null_label is not None:
            labels = drop_labels(labels, draws.label_drop, self.null_label)
        repr_loss, repr_weight = torch.zeros_like(sigma), 0.0  # (N,), its weight
        if (block := self.repr_block()) is not None:
            denoised, block_out = net(noisy, sigma, labels, mask, draws.route_noise, repr_block=block)
            if self.dispersive is not None:
                # Wang & He 2025 (InfoNCE-L2): one value per micro-batch, repeated so the sample mean adds λ·L_disp
                repr_loss = self.dispersive(block_out.per_sample()).expand_as(sigma)  # (N,)
                repr_weight = self.dispersive.weight
            else:  # SRA: the online block through the head against the EMA's later block at a lower σ
                repr_loss = self.self_alignment(block_out, y, draws.noise, sigma, labels, draws.teacher_shift)
                repr_weight = self.self_alignment.weight_now
        elif draws.route_noise is None:
            denoised = net(noisy, sigma, labels, mask)  # (N, C, H, W) float32
        else:  # TREAD: the loss stays the plain loss over all tokens (REFERENCE.md §5)
            denoised = net(noisy, sigma, labels, mask, draws.route_noise)
        err = per_token_sq_error(denoised, y, self.patch_size)  # (N, L)
        visible = None if mask is None else 1 - mask.mask  # (N, L) 0/1, None: every token
        # MaskDiT Eq. 3: λ(σ)·||D - y||², averaged over the visible tokens only.
        raw = token_mean(err, visible, self.num_tokens if mask is None else mask.num_visible)  # (N,)
        denoise = weight * raw
        mae = torch.zeros_like(denoise)
        if mask is not None and self.mae_weight > 0:
            mae = token_mean(mae_per_token(denoised, noisy, self.patch_size), mask.mask,
                             self.num_tokens - mask.num_visible)  # (N,)
        ratio = strategy.objective_ratio(sigma)  # (N,) p/q of proposal-sampling strategies, else None
        if ratio is not None:
            # Importance weights multiply the whole objective, so E_q[ratio·(λℓ + w·MAE)] = E_p[λℓ + w·MAE].
            denoise, mae = ratio * denoise, ratio * mae
        total = denoise + self.mae_weight * mae
        if self.repr_block() is not None:
            # a regulariser beside the diffusion objective: the p/q ratio, which corrects that objective's
            # σ-expectation, does not apply to it
            total = total + repr_weight * repr_loss
        return LossTerms(total=total, denoise=denoise, mae=mae, sigma=sigma, raw_denoise=raw.detach(),
                         repr=repr_loss)

    def make_mask(self, mask_noise: torch.Tensor, mask_ratio: float) -> TokenMask | None:
        if num_visible_tokens(self.num_tokens, mask_ratio) == self.num_tokens:
            return None
        return mask_from_noise(mask_noise, mask_ratio)
