"""Evaluate a model: FID, sFID, IS, precision, recall (ADM/EDM protocol), streamed, nothing written to disk.

Examples:
  accelerate launch --multi_gpu eval_latent.py --config configs/test/maskdit-256.yaml \\
      --ckpt results/imagenet256-maskdit-xl2 --ref VIRTUAL_imagenet256_labeled.npz
  python eval_latent.py --config configs/test/fashion-mnist.yaml --ckpt results/fmnist-maskdit --ref fm-ref.npz
  python eval_latent.py ref --config configs/test/fashion-mnist.yaml --source fashion_mnist:test --out fm-ref.npz
  python eval_latent.py images --config configs/test/fashion-mnist.yaml --source npz:samples.npz --ref fm-ref.npz
Sources (dataio/image_sources.py, the same names as extract_latent.py; the split defaults to test): fashion_mnist[:SPLIT[:DIR]]
(32×32 zero-padded), cifar10[:SPLIT[:DIR]], npz:FILE (arr_0 uint8 NHWC), folder:DIR (PNGs). Config keys can be
overridden as key=value (e.g. sampling.cfg_scale=1 num_samples=10000).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from dataio.autoencoder import Decoder
from evaluation.config import load_eval_config
from evaluation.evaluate import ProcessSplit, build_feature_net, metrics_table, model_features, score, source_features
from evaluation.metrics import load_reference, save_reference
from diffusion.network import load_for_sampling
from utils.distributed import release_process_group
from utils.cli import run_command
from utils.layered_config import ConfigError


MODES = ("model", "ref", "images")


def parse_args(argv=None) -> argparse.Namespace:
    """[MODE] --options... [key=value ...]; MODE is model (default: generate and evaluate), ref (reference
    statistics of a source) or images (evaluate a source)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv.pop(0) if argv and argv[0] in MODES else "model"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="eval_latent.py [model|ref|images] --config YAML [options] [key=value ...]")
    p.add_argument("--config", required=True, help="evaluation YAML (configs/test/...)")
    p.add_argument("--ckpt", help="run dir, checkpoint dir or snapshot file (mode model)")
    p.add_argument("--ref", help="reference npz (ADM VIRTUAL_*.npz, EDM mu/sigma npz, or from `ref`)")
    p.add_argument("--source", help="image source for modes ref and images")
    p.add_argument("--num-samples", type=int, help="overrides the config's num_samples")
    p.add_argument("--inception", help="Inception weights file (overrides config and $MASKDIT_INCEPTION)")
    p.add_argument("--out", help="mode ref: the npz to write; other modes: write metrics JSON here too")
    args, rest = p.parse_known_args(argv)
    bad = [r for r in rest if "=" not in r or r.startswith("-")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    args.mode, args.overrides = mode, rest
    return args


def check_args(args) -> None:
    needed = {"model": ("ckpt", "ref"), "ref": ("source", "out"), "images": ("source", "ref")}[args.mode]
    missing = [f"--{n}" for n in needed if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"mode {args.mode} needs {' and '.join(missing)}")


def main(argv=None) -> None:
    args = parse_args(argv)
    state = PartialState(cpu=not torch.cuda.is_available())  # torchrun on a CPU machine: gloo
    try:
        check_args(args)
        overrides = list(args.overrides) + ([f"num_samples={args.num_samples}"] if args.num_samples else []) + (
            [f"inception={args.inception}"] if args.inception else [])
        cfg = load_eval_config(args.config, overrides)
        feature_net = build_feature_net(cfg, state.device)
        ref = load_reference(args.ref, feature_net) if args.ref else None  # checked whole, before any sampling
        net = decoder = None
        if args.mode == "model":
            net, meta = load_for_sampling(args.ckpt, state.device)
            decoder = Decoder(meta["data"], state.device)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    split = ProcessSplit(state)
    if args.mode == "model":
        total = model_features(net, decoder, cfg, feature_net, state.device, split)
    else:  # ref keeps pr_features per process for the reference pool it stores; images splits them
        total = source_features(args.source, cfg, feature_net, state.device, split,
                                cfg.pr_features if args.mode == "ref" else None)
    if total is None:  # not the main process
        return
    if args.mode == "ref":
        save_reference(total, feature_net.name, Path(args.out))
        print(f"wrote reference statistics of {total.pool.n} images ({feature_net.name}) to {args.out}")
        return
    metrics = score(total, ref, feature_net, cfg, state.device)
    print(metrics_table(metrics, feature_net.name))
    print(json.dumps({"features": feature_net.name, **metrics}))
    if args.out:
        Path(args.out).write_text(json.dumps({"features": feature_net.name, **metrics}, indent=2) + "\n")


if __name__ == "__main__":
    run_command(main, release_process_group)
