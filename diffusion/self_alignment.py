"""Self-representation alignment (SRA, arXiv 2505.02831; code vvvvvjdy/SRA): the network's
own later-block representation, at a less noisy level, as the target of an earlier block, with no external
encoder.

One training step, as the authors' SiT code does it:
- student: the online network's output of an early encoder block (their SiT-XL: block 8), through a small
  trainable projection head (Linear D→2D, SiLU, Linear 2D→D), at the step's noise level;
- teacher: the EMA network (in eval mode, no gradient) on the same clean image, the same noise ε and the same
  (dropped) labels at a less noisy level, its output of a later block (block 20) on every token;
- loss: smooth-L1 (β 0.05) between the two, averaged over tokens and channels; weight 0.2, decayed 10× per 1000
  epochs after epoch 150 (ImageNet-256). The EMA is the suite's classic EMA, the one snapshots export.

Noise levels. SRA's SiT trains on the linear path x_t = (1 − t)·x0 + t·ε, t ∈ [0, 1], and shifts the teacher to
t' = clamp(t − U(0, 0.2), 0, 1). Divided by (1 − t), x_t is EDM's x0 + σ·ε with σ = t / (1 − t) (the network's
input scaling c_in removes the factor), so t = σ / (1 + σ), the shift is applied to that t, and σ' = t' / (1 − t')
with the same ε. σ' is floored at EDM's σ_min 0.002: SiT's t' = 0 is an ordinary input, but EDM's noise
conditioning ln(σ)/4 is −∞ at σ = 0.

Masking and routing. The teacher sees every token (it is a sampling-time network: eval mode, no mask, no
routing); the student's block sees only its visible (and, inside TREAD's range, routed) tokens, and each is
aligned with the teacher's token at the same grid position.

Cost: one no-grad forward of the EMA network up to the teacher block per step (blocks after it are not run); the
time-to-quality benchmark's side-by-side img/s counts it.
"""

import torch
import torch.nn.functional as F
from torch import nn

from models.maskdit import BlockTokens

# EDM's smallest noise level (Karras et al. 2022, Table 1): the floor of the teacher's σ
TEACHER_SIGMA_MIN = 0.002


def teacher_sigma(sigma: torch.Tensor, shift: torch.Tensor, max_time_shift: float) -> torch.Tensor:
    """σ (N,), shift (N,) uniform [0, 1) -> the teacher's σ' (N,) ≤ σ: SRA's t' = clamp(t − max·u, 0, 1) on the
    linear path, with t = σ / (1 + σ) and σ' = t' / (1 − t') (module docstring), floored at TEACHER_SIGMA_MIN."""
    t = sigma / (1 + sigma)  # (N,) in [0, 1)
    t_teacher = (t - max_time_shift * shift).clamp_min(0)  # (N,) ≤ t < 1
    return (t_teacher / (1 - t_teacher)).clamp_min(TEACHER_SIGMA_MIN)


def alignment_weight(weight: float, kimg: float, decay_start_kimg: float, decay_kimg: float) -> float:
    """The alignment term's weight after `kimg` thousand training images: `weight` until decay_start_kimg, then
    10× smaller per decay_kimg (SRA's ImageNet-256 schedule: 0.2 · 0.1^((epoch − 149) / 1000) after epoch 149)."""
    return weight * 0.1 ** (max(0.0, kimg - decay_start_kimg) / decay_kimg)


class ProjectionHead(nn.Module):
    """The student's head: Linear D→2D, SiLU, Linear 2D→D, applied to each token; xavier-uniform weights and zero
    biases, the authors' initialisation of every linear layer."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(tokens)))  # (N, T, D)


class TeacherRef:
    """Holds the EMA network by reference, deliberately not as a submodule: its weights belong to the EMA (updated
    after each step, saved as the EMA), not to the objective's parameters, state dict or DDP buckets."""

    def __init__(self, net: nn.Module):
        self.net = net


class SelfAlignment(nn.Module):
    """The SRA term of a training objective. Its only parameters are the projection head's: they train with the
    network and are saved in checkpoints, never in the EMA snapshots that sampling reads."""

    def __init__(self, width: int, student_block: int, teacher_block: int, max_time_shift: float,
                 smooth_l1_beta: float, weight: float):
        super().__init__()
        self.head = ProjectionHead(width)
        self.student_block, self.teacher_block = student_block, teacher_block  # 0-based encoder block indices
        self.max_time_shift, self.smooth_l1_beta = max_time_shift, smooth_l1_beta
        # the scheduled weight (alignment_weight), set by the trainer before each step; a device tensor read
        # inside the compiled step, so its changes cost no recompilation
        self.register_buffer("weight_now", torch.tensor(float(weight)), persistent=False)
        self.teacher: TeacherRef | None = None

    def attach_teacher(self, ema_net: nn.Module) -> None:
        self.teacher = TeacherRef(ema_net)

    def set_weight(self, value: float) -> None:
        self.weight_now.fill_(value)

    def forward(self, student: BlockTokens, clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                labels: torch.Tensor | None, shift: torch.Tensor) -> torch.Tensor:
        """student: the online network's block output; clean, noise (N, C, H, W); σ, shift (N,); labels as the
        student saw them (after label dropout) -> (N,) smooth-L1 alignment loss per sample (unweighted)."""
        with torch.no_grad():
            sigma_teacher = teacher_sigma(sigma, shift, self.max_time_shift)  # (N,)
            noisy_teacher = clean + noise * sigma_teacher[:, None, None, None]  # (N, C, H, W), the student's ε
            target = self.teacher.net.block_tokens(noisy_teacher, sigma_teacher, labels, self.teacher_block)
            # target: (N, L, D), the teacher block's output on every token
            if student.positions is not None:  # the teacher's tokens where the student's block saw its own
                index = student.positions[..., None].expand(-1, -1, target.shape[-1])  # (N, T_s, D)
                target = torch.gather(target, 1, index)  # (N, T_s, D)
        pred = self.head(student.tokens)  # (N, T_s, D)
        # SRA's loss: smooth-L1 with β 0.05, the mean over tokens and channels
        per_element = F.smooth_l1_loss(pred.float(), target.float(), beta=self.smooth_l1_beta, reduction="none")
        return per_element.mean((1, 2))  # (N,)
