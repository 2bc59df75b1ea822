"""The classic baseline backbone: the DDPM CIFAR-10 U-Net (Ho et al. 2020, App. B) as a diffusers UNet2DModel.

Topology as google/ddpm-cifar10-32: channel multipliers (1, 2, 2, 2), two residual blocks per resolution,
self-attention at 16×16 and in the middle block, dropout 0.1, sinusoidal timestep embedding of the integer
DDPM step. `unet_channels` (128 in DDPM, 35.7 M parameters) scales the width; narrower versions keep DDPM's
four channels per GroupNorm group, up to 32 groups. Class labels (plus one null label for classifier-free
guidance, as in MaskDiT) are embedded and added to the timestep embedding.

It takes the same call as MaskDiT — (c_in·x, c_noise, labels, mask) — so the trainer, samplers and
evaluator run it unchanged; it never sees a token mask (the config validation requires mask.ratio 0).
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.masking import TokenMask


@dataclass
class UNetSpec:
    resolution: int
    in_channels: int
    num_classes: int  # 0 = unconditional
    channels: int = 128
    dropout: float = 0.1
    patch_size: int = 1  # the loss averages its squared error per "token"; for a U-Net a token is a pixel


class DDPMUNet(nn.Module):
    def __init__(self, spec: UNetSpec):
        super().__init__()
        from diffusers import UNet2DModel  # imported here: the transformer path does not need diffusers

        self.spec = spec
        ch = spec.channels
        self.unet = UNet2DModel(
            sample_size=spec.resolution, in_channels=spec.in_channels, out_channels=spec.in_channels,
            block_out_channels=(ch, 2 * ch, 2 * ch, 2 * ch), layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=None, norm_num_groups=min(32, ch // 4), norm_eps=1e-6, dropout=spec.dropout,
            downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, time_embedding_type="positional",
            num_class_embeds=spec.num_classes + 1 if spec.num_classes else None)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None,
                mask: TokenMask | None = None) -> torch.Tensor:
        """x (N, C, H, W), c_noise (N,) DDPM step (float, may lie between integers) -> ε prediction (N, C, H, W)."""
        if mask is not None:
            raise ValueError("the DDPM U-Net trains on whole images: set mask.ratio 0")
        return self.unet(x, c_noise, class_labels=labels if self.spec.num_classes else None).sample
