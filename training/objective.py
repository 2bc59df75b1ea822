"""The training step's forward as one module: preconditioning, network, masking, routing, the loss terms and
the strategy's weights and p/q ratios.

Why a module: torch.compile compiles it whole (`fullgraph=True` holds on the CPU for every strategy, see
tests/test_compiled_step.py), DDP wraps it (its parameters are the network's), and accelerate's autocast covers
it. The step's random draws (diffusion/step_draws.py) are made just before, outside the graph: they come from
an explicitly seeded torch.Generator, which Dynamo cannot trace ("Failed to convert args/kwargs to proxy"), and
the explicit generator is what makes seeded runs and the paired benchmark reproducible. Drawing them is a few
RNG kernels on the device, with no host sync.
"""

import torch
from torch import nn

from diffusion.loss import LossTerms, MaskDiTLoss
from diffusion.step_draws import Draws


class TrainingObjective(nn.Module):
    def __init__(self, net: nn.Module, loss: MaskDiTLoss, strategy):
        super().__init__()
        self.net = net  # the preconditioned network (diffusion/precond.py); the only parameters
        self.loss = loss
        self.strategy = strategy  # tensors on the device (NoiseLevelStrategy.to), read inside the graph
        # SRA's projection head (loss.repr.kind sra) trains with the network: registered here, so DDP reduces
        # its gradients and autocast covers it; None otherwise
        self.self_alignment = loss.self_alignment

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None, draws: Draws,
                mask_ratio: float) -> LossTerms:
        """images (N, C, H, W), labels (N,) or None, this micro-batch's draws -> per-sample loss terms (N,)."""
        return self.loss(self.net, images, labels, self.strategy, mask_ratio, draws)
