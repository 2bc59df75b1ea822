"""Training-step and sampling throughput: img/s, achieved TFLOP/s, MFU and peak memory.

The training step is the real one: training/loop.py's Trainer.step, built by the same `assemble_trainer` as
train.py (the step's draws, the compiled TrainingObjective, autocast through accelerate, backward, AdamW,
EMA, the strategy's update), on random ImageNet-256-shaped latents (32×32×4) held in device memory. FLOPs are
counted once per configuration on the meta device (FlopCounterMode, forward + backward of the same objective
at batch 2), so no second full-size step runs, and the peak memory is read right after the timed steps.

  python -m benchmarks.throughput --arch XL --batch 256 --mask-ratio 0.5 --compile net    # MaskDiT-XL/2
  python -m benchmarks.throughput --arch XL --batch 128 --mask-ratio 0 --no-decoder         # DiT-XL/2
  python -m benchmarks.throughput --arch XL --batch 64 --sample --cfg-scale 1.5             # Heun-40 + CFG
  python -m benchmarks.throughput --sizes S B L XL --out results/bench-throughput            # table
"""

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from dataio.stream import InMemoryBatches, ShuffledIndexStream
from dataio.training_data import InMemoryImages, TrainingData
from diffusion.loss import MaskDiTLoss
from diffusion.network import build_network
from diffusion.samplers import edm_sample, guided_denoiser
from diffusion.step_draws import draw_step
from diffusion.strategies import build_strategy
from training.checkpoint import Progress
from training.config import Config, ModelConfig
from training.fp8 import fp8_refusal
from training.loop import BatchLayout, assemble_trainer, build_model_parts, make_accelerator
from training.objective import TrainingObjective

MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
LATENT_SHAPE_CHANNELS = 4
NUM_CLASSES = 1000


def model_config(args, arch: str) -> ModelConfig:
    custom = {"depth": args.depth, "width": args.width, "heads": args.heads} if args.depth else {}
    decoder = ({"decoder_depth": args.decoder_depth, "decoder_width": args.decoder_width or args.width,
                "decoder_heads": args.heads} if args.decoder_depth else {})
    return ModelConfig(arch=arch, patch_size=args.patch, resolution=args.resolution, in_channels=LATENT_SHAPE_CHANNELS,
                       num_classes=NUM_CLASSES, use_decoder=not args.no_decoder,
                       grad_checkpointing=args.grad_checkpointing, grad_checkpointing_every=args.checkpoint_every,
                       residual_bf16=args.residual_bf16, **custom, **decoder)


def train_config(args, arch: str) -> Config:
    """The train.py config this measurement stands for (its step is what gets timed)."""
    cfg = Config()
    cfg.model = model_config(args, arch)
    cfg.mask.ratio = cfg.mask.ratio_end = args.mask_ratio
    cfg.diffusion.strategy.name = args.strategy
    cfg.train.batch_size = args.batch
    cfg.train.mixed_precision = MIXED_PRECISION[args.precision]
    cfg.train.compile = args.compile
    cfg.train.compile_strict = True  # a scope that fails to compile is a failed row, never another scope's number
    cfg.train.compile_backend = args.compile_backend
    cfg.train.activation_memory_budget = args.memory_budget
    cfg.train.fp8 = args.fp8
    cfg.train.tf32 = True
    cfg.optim.lr = 1e-4
    return cfg


def in_memory_latents(cfg: Config, device, batches_held: int = 4) -> TrainingData:
    """Random latents and labels on the device: the data path costs nothing, the step is what is measured."""
    n, side = cfg.train.batch_size * batches_held, cfg.model.resolution
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, LATENT_SHAPE_CHANNELS, side, side, generator=gen).to(device)  # (N, 4, h, w)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen).to(device)  # (N,)
    data = InMemoryImages(images, labels, NUM_CLASSES, "random latents in device memory")
    batches = InMemoryBatches(data, ShuffledIndexStream(n, seed=0), cfg.train.batch_size, device)
    return TrainingData(batches, tuple(images.shape[1:]), NUM_CLASSES, data.description, {"space": "latent"})


def build_trainer(cfg: Config, work_dir: Path):
    accelerator = make_accelerator(cfg, work_dir)
    device = accelerator.device
    if cfg.train.fp8 and (refusal := fp8_refusal(device, cfg.train.mixed_precision)):
        raise SystemExit(refusal)
    parts = build_model_parts(cfg, device)
    trainer = assemble_trainer(cfg, accelerator, parts, in_memory_latents(cfg, device),
                               BatchLayout(cfg.train.batch_size, 1))
    return trainer, device


def flops_per_image(cfg: Config) -> float:
    """Forward + backward FLOPs of one training image, counted on the meta device (no memory, no compute)."""
    batch = 2
    with torch.device("meta"):
        net = build_network(cfg.model).train().to("meta")  # .to: tables built from numpy start on the CPU
        images = torch.randn(batch, LATENT_SHAPE_CHANNELS, cfg.model.resolution, cfg.model.resolution)
        labels = torch.randint(0, NUM_CLASSES, (batch,))
    strategy = build_strategy(cfg.diffusion.strategy.name, dict(cfg.diffusion.strategy.params), cfg.model.sigma_data)
    num_tokens = (cfg.model.resolution // cfg.model.patch_size) ** 2
    objective = TrainingObjective(net, MaskDiTLoss(cfg.model.patch_size, num_tokens, cfg.mask.mae_weight, NUM_CLASSES),
                                  strategy.to("meta"))
    draws = draw_step(strategy, None, batch, images.shape[1:], num_tokens, cfg.model.label_dropout, "meta",
                      latent=True, route=cfg.model.route.ratio > 0)
    with FlopCounterMode(display=False) as counter:
        objective(images, labels, draws, cfg.mask.ratio).total.mean().backward()
    return counter.get_total_flops() / batch


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def first_call_seconds(fn, device) -> float:
    """Seconds of the first call: compilation (when compiled) plus one step."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(fn, steps: int, warmup: int, device) -> float:
    """Seconds per call after warm-up (any recompilation happens there)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def run_training(args, arch: str) -> dict:
    cfg = train_config(args, arch)
    with tempfile.TemporaryDirectory() as work_dir:
        trainer, device = build_trainer(cfg, Path(work_dir))
        progress = Progress()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = functools.partial(trainer.step, progress, cfg.mask.ratio)
        first_s = first_call_seconds(step, device)
        sec = measure(step, args.steps, max(0, args.warmup - 1), device)
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    flops = flops_per_image(cfg) * args.batch
    row = {"arch": f"{'MaskDiT' if cfg.model.use_decoder else 'DiT'}-{arch}/{cfg.model.patch_size}", "mode": "train",
           "batch": args.batch, "mask_ratio": args.mask_ratio, "precision": args.precision, "compile": args.compile,
           "options": options_label(args),
           "img_per_s": args.batch / sec, "step_s": sec, "first_step_s": first_s,
           "compile_s": max(0.0, first_s - sec) if args.compile != "none" else 0.0,
           "gflop_per_img": flops / args.batch / 1e9, "tflop_per_s": flops / sec / 1e12}
    row["mfu"] = row["tflop_per_s"] / args.peak_tflops
    if peak_gib is not None:
        row["peak_gib"] = peak_gib
    return row


def options_label(args) -> str:
    """The speed/memory options of a row, as the config keys they set."""
    parts = [f"grad_checkpointing={args.grad_checkpointing}/{args.checkpoint_every}"] * (args.grad_checkpointing != "none")
    parts += ["residual_bf16"] * args.residual_bf16 + ["fp8"] * args.fp8
    parts += [f"memory_budget={args.memory_budget:g}"] * (args.memory_budget < 1)
    parts += [f"inductor.{option}" for option in args.inductor]
    return " ".join(parts) or "-"


def set_inductor_options(options: list[str]) -> None:
    """Set torch._inductor.config entries given as dotted KEY=VALUE (VALUE read as a YAML scalar)."""
    import torch._inductor.config as inductor_config
    for option in options:
        key, sep, text = option.partition("=")
        *path, name = key.split(".")
        owner = inductor_config
        for part in path:
            owner = getattr(owner, part, None)
        if not sep or owner is None or not hasattr(owner, name):
            raise SystemExit(f"--inductor {option}: not a KEY=VALUE of torch._inductor.config in torch {torch.__version__}")
        setattr(owner, name, yaml.safe_load(text))  # the YAML scalar rules of OmegaConf's own dotlists


def run_sampling(args, arch: str, device) -> dict:
    cfg = model_config(args, arch)
    net = build_network(cfg).to(device).eval().requires_grad_(False)
    labels = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    dtype = AUTOCAST[args.precision]

    def sample() -> None:
        noise = torch.randn(args.batch, LATENT_SHAPE_CHANNELS, cfg.resolution, cfg.resolution, device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            edm_sample(guided_denoiser(net, labels, args.cfg_scale, cfg.num_classes), noise, num_steps=args.sample_steps)

    sec = measure(sample, max(1, args.steps // 10), 1, device)
    return {"arch": f"{'MaskDiT' if cfg.use_decoder else 'DiT'}-{arch}/{cfg.patch_size}", "mode": "sample",
            "batch": args.batch, "steps": args.sample_steps, "cfg_scale": args.cfg_scale, "precision": args.precision,
            "img_per_s": args.batch / sec}


def write_table(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys)
              + " |" for r in rows]
    (out / "throughput.md").write_text("\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="XL")
    p.add_argument("--sizes", nargs="+", help="run several arch sizes (overrides --arch)")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--depth", type=int, help="custom depth/width/heads (smoke tests)")
    p.add_argument("--width", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--decoder-depth", type=int)
    p.add_argument("--decoder-width", type=int)
    p.add_argument("--no-decoder", action="store_true", help="DiT baseline")
    p.add_argument("--strategy", default="edm", help="noise-level strategy of the step")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mask-ratio", type=float, default=0.5)
    p.add_argument("--precision", default="bf16", choices=list(AUTOCAST))
    p.add_argument("--compile", default="none", choices=["none", "net", "blocks", "step"],
                   help="train.compile scope (training/compile_scope.py); a scope that fails is an error here")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--memory-budget", type=float, default=1.0, help="train.activation_memory_budget (compiled)")
    p.add_argument("--grad-checkpointing", default="none", help="none | all | encoder | decoder")
    p.add_argument("--checkpoint-every", type=int, default=1, help="checkpoint every k-th chosen block")
    p.add_argument("--residual-bf16", action="store_true", help="model.residual_bf16")
    p.add_argument("--fp8", action="store_true", help="train.fp8 (torchao float8 block linears)")
    p.add_argument("--inductor", nargs="+", default=[], metavar="KEY=VALUE",
                   help="torch._inductor.config options for a compiled scope, e.g. triton.persistent_reductions=false")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sample", action="store_true", help="measure EDM-Heun sampling instead of training")
    p.add_argument("--sample-steps", type=int, default=40)
    p.add_argument("--cfg-scale", type=float, default=1.5)
    p.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 matmul peak of the GPU (H100 measured)")
    p.add_argument("--out", help="directory for throughput.json / throughput.md")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    set_inductor_options(args.inductor)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the device train.py would use
    rows = []
    for arch in args.sizes or [args.arch]:
        row = run_sampling(args, arch, device) if args.sample else run_training(args, arch)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        write_table(rows, Path(args.out))
    return rows


if __name__ == "__main__":
    main()
