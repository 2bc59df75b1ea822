"""Expected peak training memory per configuration, from counting what the forward saves for backward.

Choose the activation-checkpointing option before a GPU run: the CPU runs the real training forward (the
TrainingObjective under the same autocast) at batch 1 and 2 with torch's saved-tensor hooks, adds up the bytes
of the distinct storages saved for backward (parameters excluded), and extrapolates linearly to the batch:
saved(B) = fixed + B·per_image. The fixed part is what autocast saves per weight (its bf16 copies).

  expected peak ≈ 16 B/param (fp32 weights, gradients, Adam m and v) + 4 B/param (EMA) + saved(B)

This is eager PyTorch's count. It leaves out transient buffers (an attention or GELU workspace that lives
for one op) and allocator fragmentation, so treat it as a lower bound; torch.compile usually saves less
(fused elementwise chains), and train.activation_memory_budget < 1 trades more of it for recomputation.

  python -m benchmarks.memory estimate --arch XL --batch 256 --mask-ratio 0.5 --out docs/benchmarks/memory/maskdit-xl2-b256-bf16
  python -m benchmarks.memory estimate --arch XL --batch 128 --mask-ratio 0 --no-decoder --out docs/benchmarks/memory/dit-xl2-b128-bf16
  python -m benchmarks.memory report --readme README.md     # the tables, from the committed memory.json files
"""

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from diffusion.loss import MaskDiTLoss
from diffusion.network import build_network
from diffusion.step_draws import draw_step, step_generator
from diffusion.strategies import build_strategy
from models.maskdit import Block
from training.config import ModelConfig
from training.objective import TrainingObjective

GIB = 2**30
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
OPTIONS = [("none", 1), ("decoder", 1), ("encoder", 2), ("encoder", 1), ("all", 2), ("all", 1)]


def saved_bytes(objective: TrainingObjective, batch: int, mask_ratio: float, precision: str) -> int:
    """Bytes of the distinct non-parameter storages the training forward saves for backward at this batch."""
    cfg = objective.net.backbone.spec
    gen = step_generator(0, 0, "cpu")
    shape = (cfg.in_channels, cfg.resolution, cfg.resolution)
    draws = draw_step(objective.strategy, gen, batch, shape, objective.loss.num_tokens, 0.1, "cpu",
                      route=cfg.route.ratio > 0)
    images = torch.randn(batch, *shape, generator=gen)
    labels = torch.randint(0, max(cfg.num_classes, 1), (batch,), generator=gen) if cfg.num_classes else None
    params = {p.untyped_storage().data_ptr() for p in objective.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    def keep_block_input(block, inputs) -> None:
        # A checkpointed block saves nothing through the hooks, but its input stays alive for the recomputation;
        # an ordinary block saves the same storage through its first LayerNorm, so it is counted once.
        pack(inputs[0])

    blocks = [m for m in objective.modules() if isinstance(m, Block)]
    handles = [b.register_forward_pre_hook(keep_block_input) for b in blocks]
    dtype = AUTOCAST[precision]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            terms = objective(images, labels, draws, mask_ratio)
        del terms
    finally:
        for h in handles:
            h.remove()
    return sum(storages.values())


def estimate(model_cfg: ModelConfig, batch: int, mask_ratio: float, precision: str) -> dict:
    net = build_network(model_cfg).train()
    num_tokens = (model_cfg.resolution // model_cfg.patch_size) ** 2
    objective = TrainingObjective(net, MaskDiTLoss(model_cfg.patch_size, num_tokens, 0.1, model_cfg.num_classes),
                                  build_strategy("edm", {}, model_cfg.sigma_data))
    one, two = (saved_bytes(objective, b, mask_ratio, precision) for b in (1, 2))
    per_image, fixed = two - one, 2 * one - two
    num_params = sum(p.numel() for p in net.parameters())
    static = num_params * (16 + 4)
    activations = fixed + batch * per_image
    return {"grad_checkpointing": model_cfg.grad_checkpointing, "every": model_cfg.grad_checkpointing_every,
            "params_m": num_params / 1e6, "static_gib": static / GIB, "saved_per_image_mib": per_image / 2**20,
            "saved_gib": activations / GIB, "expected_peak_gib": (static + activations) / GIB}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory estimate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="XL")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--depth", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--no-decoder", action="store_true")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mask-ratio", type=float, default=0.5)
    p.add_argument("--precision", default="bf16", choices=list(AUTOCAST))
    p.add_argument("--residual-bf16", action="store_true", help="model.residual_bf16 (with bf16)")
    p.add_argument("--out", help="write memory.json / memory.md here")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.manual_seed(0)
    custom = {k: getattr(args, k) for k in ("depth", "width", "heads") if getattr(args, k)}
    rows = []
    for mode, every in OPTIONS:
        if args.no_decoder and mode == "decoder":
            continue
        cfg = ModelConfig(arch=args.arch, patch_size=args.patch, resolution=args.resolution,
                          in_channels=args.in_channels, use_decoder=not args.no_decoder, grad_checkpointing=mode,
                          grad_checkpointing_every=every, residual_bf16=args.residual_bf16, **custom)
        # one fresh process per option: an XL network and its autograd graph are not reliably returned to the OS
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(estimate, cfg, args.batch, args.mask_ratio, args.precision).result())
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(rows, indent=1) + "\n")
        head = "| grad_checkpointing | every | saved per image (MiB) | saved (GiB) | expected peak (GiB) |"
        lines = [head, "|---|---|---|---|---|"] + [
            f"| {r['grad_checkpointing']} | {r['every']} | {r['saved_per_image_mib']:.1f} | {r['saved_gib']:.1f} | "
            f"{r['expected_peak_gib']:.1f} |" for r in rows]
        (out / "memory.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
