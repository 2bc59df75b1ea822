"""Post-hoc EMA (EDM2 §3): write the EMA of any length reconstructed from a run's power-EMA snapshots, or score a
list of lengths and print the best.

Examples:
  python reconstruct_ema.py --run results/fmnist-maskdit --sigma-rel 0.1 --out results/fmnist-maskdit/ema-0.100.safetensors
  python reconstruct_ema.py --run results/fmnist-maskdit --halflife-kimg 5 --rampup-ratio 0.1 --out classic.safetensors
  python reconstruct_ema.py sweep --run results/fmnist-maskdit --config configs/test/fashion-mnist.yaml \\
      --ref results/fmnist-test-ref.npz --sigma-rel 0.05 0.1 0.15 0.2 --out results/fmnist-maskdit/ema-sweep.json
The run must have trained with train.posthoc_ema.sigma_rels and snapshot_kimg (the embedded default does).
A written snapshot is read by generate.py and eval_latent.py like any other (--ckpt FILE). `sweep` evaluates each
length with the evaluation config (FD_fmnist and class accuracy on Fashion-MNIST, FID with Inception on latents);
config keys can be overridden as key=value (e.g. num_samples=1000). --kimg reconstructs at an earlier point.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from models.ema_profiles import MAX_SIGMA_REL
from training.posthoc_ema import EMATarget, power_snapshots, reconstruct
from models.snapshot import SnapshotError
from utils.atomic import atomic_write_text
from utils.cli import run_command
from utils.layered_config import ConfigError

MODES = ("write", "sweep")


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv.pop(0) if argv and argv[0] in MODES else "write"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="reconstruct_ema.py [write|sweep] --run DIR [options] [key=value ...]")
    p.add_argument("--run", required=True, help="run directory holding posthoc/phema-*.safetensors")
    p.add_argument("--sigma-rel", type=float, nargs="+", default=[], help="power EMA length(s) (EDM2 σ_rel)")
    p.add_argument("--halflife-kimg", type=float, help="the classic EMA of this half-life instead (or also, sweep)")
    p.add_argument("--rampup-ratio", type=float, help="with --halflife-kimg: EDM ramp-up (half-life ≤ ratio × images)")
    p.add_argument("--kimg", type=float, help="reconstruct at this point (default: the last snapshot)")
    p.add_argument("--out", help="write: the snapshot file to write; sweep: a JSON of the scores (optional)")
    p.add_argument("--config", help="sweep: evaluation YAML (configs/test/...)")
    p.add_argument("--ref", help="sweep: reference statistics npz (eval_latent.py ref)")
    args, rest = p.parse_known_args(argv)
    bad = [r for r in rest if "=" not in r or r.startswith("-")]
    if bad or (rest and mode == "write"):
        p.error(f"unrecognized arguments: {' '.join(bad or rest)}")
    args.mode, args.overrides = mode, rest
    check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for sigma_rel in args.sigma_rel:
        if not 0 < sigma_rel < MAX_SIGMA_REL:
            p.error(f"--sigma-rel {sigma_rel}: must be in (0, {MAX_SIGMA_REL:.4f})")
    if args.halflife_kimg is not None and args.halflife_kimg <= 0:
        p.error(f"--halflife-kimg must be positive (got {args.halflife_kimg})")
    targets = len(args.sigma_rel) + (args.halflife_kimg is not None)
    if args.mode == "write" and (targets != 1 or args.out is None):
        p.error("write needs exactly one of --sigma-rel X / --halflife-kimg H, and --out FILE.safetensors")
    if args.mode == "write" and not args.out.endswith(".safetensors"):
        p.error(f"--out {args.out}: a snapshot is a .safetensors file")
    if args.mode == "sweep" and (targets == 0 or args.config is None or args.ref is None):
        p.error("sweep needs --sigma-rel X [Y ...] (and/or --halflife-kimg), --config and --ref")


def targets_of(args: argparse.Namespace) -> list[EMATarget]:
    targets = [EMATarget(sigma_rel=s) for s in args.sigma_rel]
    if args.halflife_kimg is not None:
        targets.append(EMATarget(halflife_kimg=args.halflife_kimg, rampup_ratio=args.rampup_ratio))
    return targets


def step_of(args: argparse.Namespace, batch_size: int) -> int | None:
    return None if args.kimg is None else round(args.kimg * 1000 / batch_size)


def sweep(args: argparse.Namespace, snapshots) -> list[dict]:
    """Score each target through the evaluation driver (the same path as eval_latent.py), one process."""
    from evaluation.config import load_eval_config
    from evaluation.evaluate import build_feature_net, evaluate_network, reference_pool_features
    from evaluation.metrics import load_reference

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_eval_config(args.config, args.overrides)
    feature_net = build_feature_net(cfg, device)
    ref = load_reference(args.ref, feature_net)
    ref_pool = reference_pool_features(ref, feature_net, cfg, device)
    rows = []
    for target in targets_of(args):
        recon = reconstruct(snapshots, target, step_of(args, snapshots[0].batch_size))
        net, meta = recon.network(device)
        metrics = evaluate_network(net, meta, cfg, feature_net, ref, ref_pool, device)
        rows.append({"target": target.describe(), "sigma_rel": target.sigma_rel, "kimg": meta["kimg"],
                     "profile_residual": recon.residual, **metrics})
        print(f"{target.describe()}: fd {metrics['fd']:.3f}" + (
            f", class accuracy {metrics['class_accuracy']:.3f}" if "class_accuracy" in metrics else "") +
            f" (profile residual {recon.residual:.2e})", flush=True)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        snapshots = power_snapshots(args.run)
        if args.mode == "write":
            recon = reconstruct(snapshots, targets_of(args)[0], step_of(args, snapshots[0].batch_size))
            recon.save(args.out)
            print(f"wrote {args.out}: {recon.target.describe()} at step {recon.step} from {len(recon.snapshots)} "
                  f"snapshots (profile residual {recon.residual:.2e})")
            return
        rows = sweep(args, snapshots)
    except (ConfigError, FileNotFoundError, SnapshotError, ValueError) as err:
        sys.exit(f"error: {err}")
    best = min(rows, key=lambda r: r["fd"])
    print(f"best: {best['target']} (fd {best['fd']:.3f})")
    if args.out:
        atomic_write_text(args.out, json.dumps({"run": str(args.run), "config": args.config, "rows": rows,
                                                "best": best["target"]}, indent=1) + "\n")


if __name__ == "__main__":
    run_command(main)
