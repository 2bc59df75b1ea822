"""MaskDiT backbone (Zheng et al., TMLR 2024): DiT adaLN-Zero encoder on visible tokens + light decoder.

With `use_decoder=False` it is the DiT baseline (Peebles & Xie 2023). The backbone knows nothing about
noise: it maps (x_in, c_noise, labels, mask) to F; EDM scalings live in `models/precond.py`.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.embeddings import LabelEmbedder, NoiseEmbedder, sincos_2d
from models.masking import TokenMask, keep_tokens, restore_tokens, unpatchify
from models.routing import RouteSpec, put_back, route_ids, take

# Backbone sizes (DiT Table 1): depth, width, heads.
ARCHS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


@dataclass
class BackboneSpec:
    """Resolved architecture; `models/build.py` fills it from the config."""

    resolution: int
    in_channels: int
    num_classes: int  # 0 = unconditional
    patch_size: int
    depth: int
    width: int
    heads: int
    use_decoder: bool = True
    decoder_depth: int = 8
    decoder_width: int = 512
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    grad_checkpointing: bool = False
    route: RouteSpec = field(default_factory=RouteSpec)  # TREAD token routing through the encoder blocks


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, f"width {dim} not divisible by {heads} heads"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, N, H, T, Dh)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, Dh)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero transformer block; `cond_width` may differ from `width` (decoder blocks)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (N, D)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))  # (N, T, D)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))  # (N, T, D)


class AdaLNProjection(nn.Module):
    """adaLN-modulated LayerNorm + Linear: the decoder entry (width -> decoder width) and the final layer."""

    def __init__(self, width: int, out_features: int, cond_width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (N, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (N, T, out)


class MaskDiT(nn.Module):
    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        p, w = spec.patch_size, spec.width
        if spec.resolution % p:
            raise ValueError(f"resolution {spec.resolution} is not divisible by patch_size {p}")
        spec.route.check(spec.depth)
        self.grid = spec.resolution // p
        self.num_tokens = self.grid**2
        self.patch_embed = nn.Conv2d(spec.in_channels, w, kernel_size=p, stride=p)
        self.noise_embed = NoiseEmbedder(w)
        self.label_embed = LabelEmbedder(spec.num_classes, w) if spec.num_classes else None
        self.register_buffer("pos_embed", sincos_2d(w, self.grid)[None], persistent=False)  # (1, L, D)
        self.blocks = nn.ModuleList(Block(w, spec.heads, spec.mlp_ratio, w) for _ in range(spec.depth))
        head_width = w
        if spec.use_decoder:
            dw = spec.decoder_width
            self.decoder_embed = AdaLNProjection(w, dw, w)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
            self.register_buffer("decoder_pos_embed", sincos_2d(dw, self.grid)[None], persistent=False)
            self.decoder_blocks = nn.ModuleList(
                Block(dw, spec.decoder_heads, spec.mlp_ratio, w) for _ in range(spec.decoder_depth)
            )
            head_width = dw
        self.final_layer = AdaLNProjection(head_width, p * p * spec.in_channels, w)
        self._init_weights()

    def _init_weights(self):
        # DiT / MaskDiT initialisation: xavier linears, zero adaLN modulation and output (adaLN-Zero).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.label_embed is not None:
            nn.init.normal_(self.label_embed.table.weight, std=0.02)
        nn.init.normal_(self.noise_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.noise_embed.mlp[2].weight, std=0.02)
        for m in self.modules():
            if isinstance(m, (Block, AdaLNProjection)):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.spec.use_decoder:
            nn.init.normal_(self.mask_token, std=0.02)

    def _run_block(self, block: Block, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.spec.grad_checkpointing and self.training:
            return checkpoint(block, x, c, use_reentrant=False)
        return block(x, c)

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            x = self._run_block(block, x, c)
        return x

    def _run_routed(self, x: torch.Tensor, c: torch.Tensor, route_noise: torch.Tensor) -> torch.Tensor:
        """Encoder blocks with TREAD routing (models/routing.py): blocks start..end see only the routed tokens;
        the bypassing ones re-enter after block end with their activations from the input of block start."""
        route = self.spec.route
        start, end = route.start, route.resolved_end(self.spec.depth)
        ids = route_ids(route_noise, x.shape[1], route.ratio)  # (N, R)
        full = x  # (N, T, D)
        for i, block in enumerate(self.blocks):
            if i == start:
                full, x = x, take(x, ids)  # (N, R, D)
            x = self._run_block(block, x, c)
            if i == end:
                x = put_back(full, x, ids)  # (N, T, D)
        return x

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None,
                mask: TokenMask | None = None, route_noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_in (N, C, H, W), c_noise (N,), labels (N,) int or None -> F (N, C, H, W).

        `mask` drops tokens before the encoder (training only); None runs on all tokens. `route_noise` (N, L)
        uniform selects the tokens that take the routed blocks when model.route.ratio > 0 — in training mode
        only: eval and sampling run every token through every block.
        """
        x = self.patch_embed(x_in).flatten(2).transpose(1, 2) + self.pos_embed  # (N, L, D)
        c = self.noise_embed(c_noise)  # (N, D)
        if self.label_embed is not None:
            c = c + self.label_embed(labels)  # (N, D)
        if mask is not None:
            x = keep_tokens(x, mask.ids_keep)  # (N, K, D)
        if route_noise is not None and self.training and self.spec.route.ratio > 0:
            x = self._run_routed(x, c, route_noise)  # (N, K, D)
        else:
            x = self._run_blocks(self.blocks, x, c)  # (N, K, D)
        if self.spec.use_decoder:
            x = self.decoder_embed(x, c)  # (N, K, Dd)
            if mask is not None:
                x = restore_tokens(x, mask.ids_restore, self.mask_token)  # (N, L, Dd)
            elif self.training:
                # Unmasked training (finetune at ratio 0): the mask token must still get a (zero) gradient, or
                # DDP stops at step 2 waiting for its reduction (the reference adds 0·mask_token.sum() too).
                x = x + 0 * self.mask_token.sum()
            x = x + self.decoder_pos_embed  # (N, L, Dd)
            x = self._run_blocks(self.decoder_blocks, x, c)  # (N, L, Dd)
        elif mask is not None:
            raise ValueError("masked training needs the decoder (model.use_decoder: true)")
        x = self.final_layer(x, c)  # (N, L, p*p*C)
        return unpatchify(x, self.spec.patch_size, self.spec.in_channels)  # (N, C, H, W)
