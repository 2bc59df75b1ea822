"""Generate images from a trained model: EDM Heun/Euler, DDIM or DDPM, with classifier-free guidance.

Examples:
  python generate.py --ckpt results/fmnist-maskdit --num-samples 100 --out grid.png
  python generate.py --ckpt results/fmnist-maskdit/checkpoints/000004000 --sampler ddim --steps 50 --out samples/
  accelerate launch --multi_gpu generate.py --ckpt results/imagenet256/snapshots/ema-0204800.000.safetensors \
      --num-samples 50000 --cfg-scale 1.5 --out samples.npz
--ckpt takes a run directory (newest snapshot), a checkpoint directory or a snapshot file. Image i uses seed
--seed-start + i and, unless --class is given, class (seed mod num_classes): outputs do not depend on the
batch size or the number of processes. Writing to a folder skips images that already exist.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from dataio.autoencoder import Decoder
from dataio.image_io import grid_image, save_png_atomic, to_uint8
from diffusion.generation import DEFAULT_STEPS, SAMPLERS, SamplingOptions, generate, labels_for_seeds
from diffusion.network import load_for_sampling
from utils.atomic import atomic_savez
from utils.cli import run_command
from utils.distributed import release_process_group


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run dir, checkpoint dir or snapshot file")
    p.add_argument("--out", required=True, help="grid.png | folder/ | samples.npz (ADM layout)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--class", dest="fixed_class", type=int, help="generate only this class")
    p.add_argument("--sampler", default="edm", choices=SAMPLERS)
    p.add_argument("--steps", type=int, help="sampling steps (default: edm/euler 40, ddim 50, ddpm 1000)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale; 1 = unguided")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("SIGMA_LO", "SIGMA_HI"),
                   help="apply guidance only for σ in this interval")
    p.add_argument("--s-churn", type=float, default=0.0, help="EDM stochasticity S_churn (edm/euler samplers)")
    p.add_argument("--s-tmin", type=float, default=0.0, help="churn only for σ ≥ this (EDM's S_tmin)")
    p.add_argument("--s-tmax", type=float, help="churn only for σ ≤ this (EDM's S_tmax; default: no bound)")
    p.add_argument("--s-noise", type=float, default=1.0, help="std of the churn noise (EDM's S_noise)")
    p.add_argument("--clip-denoised", action="store_true",
                   help="ddim/ddpm: clamp the x0 estimate to [-1, 1] each step (pixel models, as DDPM's code)")
    p.add_argument("--batch", type=int, default=64, help="images per forward batch and process")
    p.add_argument("--grid-cols", type=int, help="columns of a PNG grid (default: number of classes)")
    args = p.parse_args(argv)
    for flag, value in (("--num-samples", args.num_samples), ("--batch", args.batch), ("--steps", args.steps)):
        if value is not None and value <= 0:
            p.error(f"{flag} must be positive (got {value})")
    if (problem := sampling_options(args).problem()) is not None:
        p.error(problem)
    return args


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The flags as the one sampling schema (diffusion/generation.py); --steps defaults per sampler."""
    lo, hi = args.guidance_interval if args.guidance_interval else (None, None)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.sampler]
    return SamplingOptions(sampler=args.sampler, num_steps=steps, cfg_scale=args.cfg_scale, guidance_sigma_lo=lo,
                           guidance_sigma_hi=hi, s_churn=args.s_churn, s_tmin=args.s_tmin, s_tmax=args.s_tmax,
                           s_noise=args.s_noise, clip_denoised=args.clip_denoised)


def output_kind(out: str) -> str:
    if out.endswith(".npz"):
        return "npz"
    if out.endswith(".png"):
        return "grid"
    return "folder"


def main(argv=None) -> None:
    args = parse_args(argv)
    state = PartialState(cpu=not torch.cuda.is_available())  # torchrun on a CPU machine: gloo
    try:
        net, meta = load_for_sampling(args.ckpt, state.device)
        decoder = Decoder(meta["data"], state.device)
        if args.clip_denoised and meta["data"].get("space") == "latent":
            raise ValueError(f"--clip-denoised: {args.ckpt} is a latent model; latents are not bounded to [-1, 1]")
        num_classes = net.backbone.spec.num_classes
        seeds = list(range(args.seed_start, args.seed_start + args.num_samples))
        labels = labels_for_seeds(seeds, num_classes, args.fixed_class)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    kind, out = output_kind(args.out), Path(args.out)
    if kind == "folder":
        done = {p.stem for p in out.glob("*.png")} if out.is_dir() else set()
        todo = [i for i, s in enumerate(seeds) if f"{s:06d}" not in done]
    else:
        todo = list(range(len(seeds)))
    mine = todo[state.process_index::state.num_processes]
    opts = sampling_options(args)
    my_seeds = [seeds[i] for i in mine]
    my_labels = labels[mine] if labels is not None else None
    results = []
    for chunk, chunk_labels, images in generate(net, decoder, my_seeds, my_labels, opts, args.batch, state.device):
        pixels = to_uint8(images)  # (B, H, W, C)
        if kind == "folder":
            for seed, img in zip(chunk, pixels):
                save_png_atomic(grid_image(img[None], cols=1), out / f"{seed:06d}.png")
        else:
            results.extend(zip(chunk, pixels))
    if kind != "folder":
        write_collected(gather_object(results), labels, seeds, kind, out, args.grid_cols or num_classes or None,
                        state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        print(f"wrote {args.num_samples} samples ({opts.sampler}, {opts.num_steps} steps, cfg {opts.cfg_scale}) "
              f"to {out}")


def write_collected(results, labels, seeds, kind: str, out: Path, cols: int | None, main_process: bool) -> None:
    """Rank 0 orders the gathered (seed, image) pairs by seed and writes the grid or the ADM npz."""
    if not main_process:
        return
    by_seed = dict(results)
    images = np.stack([by_seed[s] for s in seeds])  # (N, H, W, C) uint8
    if kind == "grid":
        save_png_atomic(grid_image(images, cols=cols), out)
        return
    arrays = {"arr_0": images}
    if labels is not None:
        arrays["arr_1"] = labels.numpy()
    atomic_savez(out, **arrays)


if __name__ == "__main__":
    run_command(main, release_process_group)
