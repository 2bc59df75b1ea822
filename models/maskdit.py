"""MaskDiT backbone (Zheng et al., TMLR 2024): DiT adaLN-Zero encoder on visible tokens + light decoder.

With `use_decoder=False` it is the DiT baseline (Peebles & Xie 2023). The backbone knows nothing about
noise: it maps (x_in, c_noise, labels, mask) to F; EDM scalings live in `diffusion/precond.py`.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from timm.layers import Attention, Mlp
from torch.utils.checkpoint import checkpoint

from models.embeddings import LabelEmbedder, NoiseEmbedder, sincos_2d
from models.masking import TokenMask, keep_tokens, restore_tokens, unpatchify
from models.routing import RouteSpec, put_back, route_ids, take

# Backbone sizes (DiT Table 1): depth, width, heads.
ARCHS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
CHECKPOINTING = ("none", "all", "encoder", "decoder")


def checkpointing_mode(value) -> str:
    """model.grad_checkpointing; snapshots written before the selective modes hold a bool."""
    if isinstance(value, bool):
        return "all" if value else "none"
    if value not in CHECKPOINTING:
        raise ValueError(f"model.grad_checkpointing: {value!r} is not one of {' | '.join(CHECKPOINTING)}")
    return value


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
    grad_checkpointing: str = "none"  # none | all | encoder | decoder: blocks that recompute in backward
    grad_checkpointing_every: int = 1  # of the chosen blocks, every k-th one (1 = each)
    residual_bf16: bool = False  # under bf16 autocast, keep the residual stream in bf16 (not fp32)
    route: RouteSpec = field(default_factory=RouteSpec)  # TREAD token routing through the encoder blocks


class BlockTokens(NamedTuple):
    """One encoder block's output as the block saw its tokens, for representation losses (diffusion/dispersive.py,
    diffusion/self_alignment.py)."""

    tokens: torch.Tensor  # (N, T_b, D)
    positions: torch.Tensor | None  # (N, T_b) int64 grid index of each token; None: all L tokens in grid order

    def per_sample(self) -> torch.Tensor:
        """One vector per sample: flattened (N, L·D) when every token is in its place, else the mean over the tokens
        each sample's block saw (N, D): under masking or routing the token sets differ between samples, and
        position-by-position distances would compare unrelated patches."""
        return self.tokens.flatten(1) if self.positions is None else self.tokens.mean(1)


def token_positions(mask: TokenMask | None, route_ids: torch.Tensor | None) -> torch.Tensor | None:
    """Grid positions of the tokens a block sees: the visible ones (mask.ids_keep (N, K)), further narrowed to the
    routed ones inside TREAD's range (route_ids (N, R) index the tokens entering the range). None: all, in order."""
    if mask is None:
        return route_ids
    if route_ids is None:
        return mask.ids_keep
    return torch.gather(mask.ids_keep, 1, route_ids)  # (N, R)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def approx_gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")  # DiT's MLP activation


class Block(nn.Module):
    """adaLN-Zero transformer block; `cond_width` may differ from `width` (decoder blocks)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        assert width % heads == 0, f"width {width} not divisible by {heads} heads"
        # timm's layers, as DiT and the MaskDiT reference build them: qkv + SDPA (q, k, v by unbind) + proj;
        # fc1 + tanh-GELU + fc2. Parameter names (attn.qkv, attn.proj, mlp.fc1, mlp.fc2) are the same as before.
        self.attn = Attention(width, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, hidden_features=int(width * mlp_ratio), act_layer=approx_gelu)
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
        spec.grad_checkpointing = checkpointing_mode(spec.grad_checkpointing)
        if spec.grad_checkpointing_every < 1:
            raise ValueError(f"model.grad_checkpointing_every: {spec.grad_checkpointing_every} must be ≥ 1")
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

    def _checkpointed(self, part: str, index: int) -> bool:
        """Whether block `index` of `part` (encoder | decoder) recomputes its activations in backward."""
        mode = self.spec.grad_checkpointing
        chosen = mode == "all" or mode == part
        return chosen and self.training and index % self.spec.grad_checkpointing_every == 0

    def _run_block(self, block: Block, x: torch.Tensor, c: torch.Tensor, checkpointed: bool) -> torch.Tensor:
        if checkpointed:
            return checkpoint(block, x, c, use_reentrant=False)
        return block(x, c)

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, c: torch.Tensor, part: str) -> torch.Tensor:
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, c, self._checkpointed(part, i))
        return x

    def _run_encoder(self, x: torch.Tensor, c: torch.Tensor, route_noise: torch.Tensor | None,
                     mask: TokenMask | None, repr_block: int | None) -> tuple[torch.Tensor, BlockTokens | None]:
        """The encoder blocks, with TREAD routing (models/routing.py) when route_noise is given: blocks start..end
        see only the routed tokens; the bypassing ones re-enter after block end with their activations from the
        input of block start. -> (output (N, T, D), block `repr_block`'s output as that block saw its tokens, or
        None)."""
        route = self.spec.route
        routed = route_noise is not None and self.training and route.ratio > 0
        start, end = (route.start, route.resolved_end(self.spec.depth)) if routed else (-1, -1)
        ids = route_ids(route_noise, x.shape[1], route.ratio) if routed else None  # (N, R)
        full, captured = x, None  # (N, T, D)
        for i, block in enumerate(self.blocks):
            if i == start:
                full, x = x, take(x, ids)  # (N, R, D)
            x = self._run_block(block, x, c, self._checkpointed("encoder", i))
            if i == repr_block:
                captured = BlockTokens(x, token_positions(mask, ids if start <= i <= end else None))
            if i == end:
                x = put_back(full, x, ids)  # (N, T, D)
        return x, captured

    def embed(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the encoder's input tokens (N, L, D), the conditioning (N, D))."""
        x = self._residual(self.patch_embed(x_in).flatten(2).transpose(1, 2) + self.pos_embed)  # (N, L, D)
        c = self.noise_embed(c_noise)  # (N, D)
        if self.label_embed is not None:
            c = c + self.label_embed(labels)  # (N, D)
        return x, c

    def encode_to(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None,
                  block: int) -> torch.Tensor:
        """The output of encoder block `block` (0-based) on every token, running no block after it: (N, L, D).
        The target network of self-representation alignment (diffusion/self_alignment.py) needs nothing more."""
        x, c = self.embed(x_in, c_noise, labels)
        for block_module in self.blocks[:block + 1]:
            x = block_module(x, c)  # (N, L, D)
        return x

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream's dtype. By default whatever the fp32 positional tables make it (fp32). With
        model.residual_bf16 under autocast: bf16, so every block's residual read and write moves half the bytes
        (LayerNorm still computes in fp32 under autocast)."""
        device_type = x.device.type  # the meta device (FLOP counting) has no autocast
        if self.spec.residual_bf16 and device_type != "meta" and torch.is_autocast_enabled(device_type):
            return x.to(torch.bfloat16)
        return x

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None,
                mask: TokenMask | None = None, route_noise: torch.Tensor | None = None,
                repr_block: int | None = None) -> torch.Tensor | tuple[torch.Tensor, "BlockTokens"]:
        """x_in (N, C, H, W), c_noise (N,), labels (N,) int or None -> F (N, C, H, W); with `repr_block` (a 0-based
        encoder block index) -> (F, that block's output tokens and where they sit, BlockTokens).

        `mask` drops tokens before the encoder (training only); None runs on all tokens. `route_noise` (N, L)
        uniform selects the tokens that take the routed blocks when model.route.ratio > 0 — in training mode
        only: eval and sampling run every token through every block.
        """
        x, c = self.embed(x_in, c_noise, labels)  # (N, L, D), (N, D)
        if mask is not None:
            x = keep_tokens(x, mask.ids_keep)  # (N, K, D)
        x, block_out = self._run_encoder(x, c, route_noise, mask, repr_block)  # (N, K, D)
        if self.spec.use_decoder:
            x = self.decoder_embed(x, c)  # (N, K, Dd)
            if mask is not None:
                x = restore_tokens(x, mask.ids_restore, self.mask_token)  # (N, L, Dd)
            elif self.training:
                # Unmasked training (finetune at ratio 0): the mask token must still get a (zero) gradient, or
                # DDP stops at step 2 waiting for its reduction (the reference adds 0·mask_token.sum() too).
                x = x + 0 * self.mask_token.sum()
            x = self._residual(x + self.decoder_pos_embed)  # (N, L, Dd)
            x = self._run_blocks(self.decoder_blocks, x, c, "decoder")  # (N, L, Dd)
        elif mask is not None:
            raise ValueError("masked training needs the decoder (model.use_decoder: true)")
        x = self.final_layer(x, c)  # (N, L, p*p*C)
        out = unpatchify(x, self.spec.patch_size, self.spec.in_channels)  # (N, C, H, W)
        return out if repr_block is None else (out, block_out)
