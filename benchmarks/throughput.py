"""Training-step and sampling throughput: img/s, achieved TFLOP/s, MFU and peak memory.

The step is the real one: MaskDiTLoss with the step's global draws, autocast, backward, fused AdamW,
EMA update; inputs are random 32×32×4 latents (ImageNet-256 shape). FLOPs are counted once per
configuration with torch's FlopCounterMode (forward + backward), so MFU = achieved / --peak-tflops.

  python benchmarks/throughput.py --arch XL --batch 256 --mask-ratio 0.5 --compile        # MaskDiT-XL/2
  python benchmarks/throughput.py --arch XL --batch 128 --mask-ratio 0 --no-decoder         # DiT-XL/2
  python benchmarks/throughput.py --arch XL --batch 64 --sample --cfg-scale 1.5             # Heun-40 + CFG
  python benchmarks/throughput.py --sizes S B L XL --out results/bench-throughput            # table
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from diffusion.loss import MaskDiTLoss  # noqa: E402
from diffusion.samplers import edm_sample, guided_denoiser  # noqa: E402
from diffusion.step_draws import draw_step, step_generator  # noqa: E402
from diffusion.strategies import build_strategy  # noqa: E402
from models.build import build_network  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.ema import EMA  # noqa: E402

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def build(args, arch: str, device):
    cfg = ModelConfig(arch=arch, patch_size=args.patch, resolution=args.resolution, in_channels=4,
                      num_classes=1000, use_decoder=not args.no_decoder, grad_checkpointing=args.grad_checkpointing,
                      **({"depth": args.depth, "width": args.width, "heads": args.heads} if args.depth else {}),
                      **({"decoder_depth": args.decoder_depth, "decoder_width": args.width,
                          "decoder_heads": args.heads} if args.decoder_depth else {}))
    net = build_network(cfg).to(device).train()
    return cfg, net


def train_step_fn(args, cfg, net, device):
    strategy = build_strategy("edm", {}, 0.5)
    num_tokens = (cfg.resolution // cfg.patch_size) ** 2
    loss_fn = MaskDiTLoss(cfg.patch_size, num_tokens, 0.1, cfg.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    ema = EMA(net)
    model = torch.compile(net) if args.compile else net
    x = torch.randn(args.batch, 4, cfg.resolution, cfg.resolution, device=device)
    y = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    dtype = AUTOCAST[args.precision]
    scaler = torch.amp.GradScaler(enabled=args.precision == "fp16")

    def step(i: int) -> None:
        draws = draw_step(strategy, step_generator(0, i, device), args.batch, (4, cfg.resolution, cfg.resolution),
                          num_tokens, 0.1, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model, x, y, strategy, args.mask_ratio, draws).total.mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        ema.update(net, 0.9999)

    return step


def count_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step(0)
    return float(counter.get_total_flops())


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, steps: int, warmup: int, device) -> float:
    """Seconds per call after warm-up (compilation happens there)."""
    for i in range(warmup):
        fn(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        fn(warmup + i)
    sync(device)
    return (time.perf_counter() - start) / steps


def run_training(args, arch: str, device) -> dict:
    cfg, net = build(args, arch, device)
    step = train_step_fn(args, cfg, net, device)
    flops = count_flops(train_step_fn(args, cfg, net, device)) if not args.compile else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = measure(step, args.steps, args.warmup, device)
    if args.compile:  # count on an eager twin: same math, FlopCounterMode does not see inside compiled graphs
        args.compile = False
        flops = count_flops(train_step_fn(args, cfg, net, device))
        args.compile = True
    row = {"arch": f"{'MaskDiT' if cfg.use_decoder else 'DiT'}-{arch}/{cfg.patch_size}", "mode": "train",
           "batch": args.batch, "mask_ratio": args.mask_ratio, "precision": args.precision, "compile": args.compile,
           "img_per_s": args.batch / sec, "gflop_per_img": flops / args.batch / 1e9,
           "tflop_per_s": flops / sec / 1e12}
    row["mfu"] = row["tflop_per_s"] / args.peak_tflops
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def run_sampling(args, arch: str, device) -> dict:
    cfg, net = build(args, arch, device)
    net.eval().requires_grad_(False)
    labels = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    dtype = AUTOCAST[args.precision]

    def sample(i: int) -> None:
        noise = torch.randn(args.batch, 4, cfg.resolution, cfg.resolution, device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            edm_sample(guided_denoiser(net, labels, args.cfg_scale, cfg.num_classes), noise, num_steps=args.sample_steps)

    sec = measure(sample, max(1, args.steps // 10), 1, device)
    return {"arch": f"{'MaskDiT' if cfg.use_decoder else 'DiT'}-{arch}/{cfg.patch_size}", "mode": "sample",
            "batch": args.batch, "steps": args.sample_steps, "cfg_scale": args.cfg_scale, "precision": args.precision,
            "img_per_s": args.batch / sec}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="XL")
    p.add_argument("--sizes", nargs="+", help="run several arch sizes (overrides --arch)")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--depth", type=int, help="custom depth/width/heads (smoke tests)")
    p.add_argument("--width", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--decoder-depth", type=int)
    p.add_argument("--no-decoder", action="store_true", help="DiT baseline")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mask-ratio", type=float, default=0.5)
    p.add_argument("--precision", default="bf16", choices=list(AUTOCAST))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sample", action="store_true", help="measure EDM-Heun sampling instead of training")
    p.add_argument("--sample-steps", type=int, default=40)
    p.add_argument("--cfg-scale", type=float, default=1.5)
    p.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 matmul peak of the GPU (H100 measured)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="directory for throughput.json / throughput.md")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = []
    for arch in args.sizes or [args.arch]:
        row = run_sampling(args, arch, device) if args.sample else run_training(args, arch, device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
        keys = list(rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |"
                  for r in rows]
        (out / "throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
