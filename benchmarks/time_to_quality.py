"""Time-to-quality: sample quality vs training wall-clock for MaskDiT, its strategies and the baselines.

Every row trains from scratch with the real train.py for the same training-clock budget on the same machine
(one run at a time), writing an EMA snapshot every `--eval-every` minutes of training clock (the clock stops
while snapshots and checkpoints are written; see training/loop.py). Afterwards each snapshot is evaluated with
the suite's evaluator — on the embedded default, FD and class accuracy in the offline Fashion-MNIST classifier
features (configs/test/fashion-mnist.yaml) — so evaluation never eats into a row's budget.

Rows (ROWS below): DiT (no mask) + EDM; MaskDiT 50% + EDM, + SpeeD, + Min-SNR-5, + the adaptive strategy;
the MaskDiT paper's own recipe; and the classic U-Net DDPM baseline (DDPM CIFAR-10 U-Net topology, ε-prediction,
uniform t, DDPM ancestral sampling).

Speed-up is reported as the papers do: the training minutes and images a row needs to reach the baseline
row's final quality (linear interpolation between evaluation points), against the baseline's own.

  python benchmarks/time_to_quality.py --minutes 3 --eval-every 1.5 --seeds 0 --out results/bench-ttq
  python benchmarks/time_to_quality.py --minutes 3 --eval-every 1.5 --seeds 1 --out results/bench-ttq \\
      --rows maskdit_edm maskdit_speed maskdit_min_snr maskdit_adaptive      # more seeds where it matters
  # one GPU, larger budget: add config overrides for every row, e.g.
  python benchmarks/time_to_quality.py --minutes 30 --eval-every 5 --seeds 0 1 2 --num-samples 10000 \\
      train.batch_size=256 optim.lr=1e-3 train.mixed_precision=bf16

Re-running the same command skips finished runs; a run stopped during evaluation is only evaluated, one
killed during training starts over (its only checkpoint is written at the end of its budget).
Writes <out>/table.md, <out>/results.json, <out>/quality_vs_time.png and a sample grid per run.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation.config import load_eval_config  # noqa: E402
from evaluation.evaluate import build_feature_net, evaluate_snapshot, reference_pool_features  # noqa: E402
from evaluation.metrics import load_reference  # noqa: E402
from training.checkpoint import latest_checkpoint  # noqa: E402


@dataclass
class Row:
    label: str
    train_overrides: list[str]
    eval_overrides: list[str] = field(default_factory=list)


def paper_recipe() -> list[str]:
    """MaskDiT's ImageNet recipe (REFERENCE.md): constant lr 1e-4, no warmup, EMA 0.9999 per step, fp16.
    fp16 autocast needs a GPU; on a CPU the row keeps the config's precision."""
    recipe = ["optim.lr=1e-4", "optim.warmup_kimg=0", "train.ema_decay=0.9999", "train.ema_halflife_kimg=null",
              "train.ema_rampup_ratio=null"]
    return recipe + (["train.mixed_precision=fp16"] if torch.cuda.is_available() else [])


# The U-Net keeps DDPM's recipe where it fits the budget: lr 2e-4, gradient clipping at 1, dropout 0.1;
# its 5000-step warmup and EMA 0.9999 would outlast a small budget, so it shares our warmup and EMA half-life.
# Its width is --unet-channels (default 32: 2.2 M parameters, near the embedded transformers' 4-6 M; DDPM's
# 128 has 35.7 M). Row settings are the rows' recipes: they win over the overrides given for every row.
ROWS = {
    "dit_edm": Row("DiT (no mask) + EDM", ["model.use_decoder=false", "mask.ratio=0"]),
    "maskdit_edm": Row("MaskDiT 50% + EDM", []),
    "maskdit_speed": Row("MaskDiT + SpeeD", ["diffusion.strategy.name=speed"]),
    "maskdit_min_snr": Row("MaskDiT + Min-SNR-5", ["diffusion.strategy.name=min_snr"]),
    "maskdit_adaptive": Row("MaskDiT + adaptive (importance)", ["diffusion.strategy.name=importance"]),
    "maskdit_paper": Row("MaskDiT, paper recipe", paper_recipe()),
    "unet_ddpm": Row("U-Net DDPM (ε, uniform t)",
                     ["model.arch=ddpm_unet", "model.precond=vp", "mask.ratio=0",
                      "diffusion.strategy.name=ddpm_uniform", "optim.lr=2e-4", "optim.grad_clip=1"],
                     ["sampler=ddpm", "num_steps=50"]),
}


# ----------------------------------------------------------------------------
# One run: train for the budget, then evaluate its snapshots.


def python(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_run(run_dir: Path, row: Row, seed: int, args) -> None:
    """train.py with a training-clock budget. --stop-after-min counts this invocation's wall-clock, which
    also includes snapshot writes: a small margin lets the clock reach the last evaluation point.

    The only checkpoint is written at the end, so a run that has one finished training (it was stopped
    during evaluation) and is not trained again; a run killed during training has none and starts over,
    its stale snapshots removed."""
    if latest_checkpoint(run_dir) is not None:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    margin_min = 0.02 * args.minutes + 0.05
    python(["train.py", "--config", args.config, "--stop-after-min", str(args.minutes + margin_min),
            f"run_dir={run_dir}", f"train.seed={seed}", "train.total_kimg=1000000",
            f"train.snapshot_minutes={args.eval_every}", "train.keep_snapshots=0", "train.snapshot_kimg=0",
            "train.sample_kimg=0", "train.checkpoint_kimg=0", f"model.unet_channels={args.unet_channels}",
            *args.overrides, *row.train_overrides])


def snapshot_points(run_dir: Path, args) -> list[tuple[int, Path, dict]]:
    """-> [(evaluation index k, snapshot, meta)] for the snapshots at k·eval_every ≤ budget, one per k."""
    points = {}
    for path in sorted((run_dir / "snapshots").glob("ema-*.pt")):
        meta = torch.load(path, map_location="cpu", weights_only=False)
        k = math.floor(meta["train_minutes"] / args.eval_every + 1e-9)
        if 1 <= k <= round(args.minutes / args.eval_every) and k not in points:
            points[k] = (path, {"train_minutes": meta["train_minutes"], "kimg": meta["kimg"]})
    return [(k, *points[k]) for k in sorted(points)]


def mean_img_per_s(run_dir: Path) -> float:
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return float(np.mean([s["img_per_s"] for s in stats]))


def evaluate_run(run_dir: Path, row_name: str, seed: int, evaluator: "Evaluator", args) -> dict:
    points = snapshot_points(run_dir, args)
    expected = round(args.minutes / args.eval_every)
    if len(points) != expected:
        raise RuntimeError(f"{run_dir}: {len(points)} of {expected} evaluation snapshots were written")
    results = []
    for k, path, meta in points:
        grid = run_dir / f"grid-{meta['train_minutes']:.1f}min.png" if k == expected else None
        metrics = evaluator(path, ROWS[row_name].eval_overrides, grid)
        results.append({"eval_index": k, **meta, **metrics})
        print(json.dumps({"row": row_name, "seed": seed, **results[-1]}), flush=True)
    return {"row": row_name, "seed": seed, "minutes": args.minutes, "eval_every": args.eval_every,
            "img_per_s": mean_img_per_s(run_dir), "points": results}


class Evaluator:
    """Holds the feature network and reference statistics; evaluates a snapshot with per-row overrides."""

    def __init__(self, args, out: Path):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base = load_eval_config(args.eval_config, [f"num_samples={args.num_samples}"])
        ref_path = out / "reference.npz"
        if not ref_path.exists():
            python(["eval_latent.py", "ref", "--config", args.eval_config, "--source", args.reference,
                    "--out", str(ref_path)])
        self.ref = load_reference(str(ref_path))
        self.feature_net = build_feature_net(base, self.device)
        self.ref_pool = reference_pool_features(self.ref, self.feature_net, base, self.device)
        self.args = args

    def __call__(self, snapshot: Path, overrides: list[str], grid: Path | None) -> dict:
        cfg = load_eval_config(self.args.eval_config, [f"num_samples={self.args.num_samples}", *overrides])
        return evaluate_snapshot(snapshot, cfg, self.feature_net, self.ref, self.ref_pool, self.device, grid)


# ----------------------------------------------------------------------------
# Summaries: mean curves over seeds, time / images to reach the baseline's final quality.


def mean_curve(runs: list[dict], key: str) -> np.ndarray:
    """(K,) mean over seeds of `key` at each evaluation point."""
    return np.array([np.mean([r["points"][k][key] for r in runs]) for k in range(len(runs[0]["points"]))])


def first_reach(xs: np.ndarray, fds: np.ndarray, target: float) -> float | None:
    """Smallest x where the piecewise-linear FD(x) curve first falls to `target` (None if it never does)."""
    for i, fd in enumerate(fds):
        if fd <= target:
            if i == 0:
                return float(xs[0])
            # linear interpolation between the previous point (above target) and this one
            frac = (fds[i - 1] - target) / (fds[i - 1] - fd)
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return None


def summarize(by_row: dict[str, list[dict]], baseline: str) -> list[dict]:
    """Per row: mean curves, and the minutes / kimg at which the mean FD first reaches the baseline's final mean
    FD; speed-ups divide the baseline's own first-reach by the row's (the baseline is 1× by construction)."""
    base = by_row[baseline]
    target = mean_curve(base, "fd")[-1]
    base_minutes = first_reach(mean_curve(base, "train_minutes"), mean_curve(base, "fd"), target)
    base_kimg = first_reach(mean_curve(base, "kimg"), mean_curve(base, "fd"), target)
    rows = []
    for name, runs in by_row.items():
        fd, minutes, kimg = mean_curve(runs, "fd"), mean_curve(runs, "train_minutes"), mean_curve(runs, "kimg")
        fd_sd = np.array([np.std([r["points"][k]["fd"] for r in runs]) for k in range(len(fd))])
        reach_min, reach_kimg = first_reach(minutes, fd, target), first_reach(kimg, fd, target)
        rows.append({"row": name, "label": ROWS[name].label, "seeds": sorted(r["seed"] for r in runs),
                     "img_per_s": float(np.mean([r["img_per_s"] for r in runs])), "minutes": minutes.tolist(),
                     "kimg": kimg.tolist(), "fd": fd.tolist(), "fd_sd": fd_sd.tolist(),
                     "class_accuracy": float(mean_curve(runs, "class_accuracy")[-1]),
                     "minutes_to_target": reach_min, "kimg_to_target": reach_kimg,
                     "reached_by_first_eval": bool(fd[0] <= target),  # then it is an upper bound (≤)
                     "speedup_wallclock": base_minutes / reach_min if reach_min else None,
                     "speedup_images": base_kimg / reach_kimg if reach_kimg else None})
    return rows


def markdown_table(summary: list[dict], baseline: str, args) -> str:
    times = [f"FD @ {args.eval_every * (k + 1):g} min" for k in range(len(summary[0]["fd"]))]
    head = ["row", "seeds", "img/s", "kimg @ end", *times, "class acc @ end",
            f"min to {baseline} final FD", "speed-up (wall-clock)", "speed-up (images)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        fds = [f"{m:.1f} ± {sd:.1f}" if len(s["seeds"]) > 1 else f"{m:.1f}" for m, sd in zip(s["fd"], s["fd_sd"])]
        bound = ("≤ ", "≥ ") if s["reached_by_first_eval"] and s["row"] != baseline else ("", "")
        reach = f"{bound[0]}{s['minutes_to_target']:.2f}" if s["minutes_to_target"] is not None else "not reached"
        speed = [f"{bound[1]}{v:.2f}×" if v is not None else "—" for v in (s["speedup_wallclock"], s["speedup_images"])]
        cells = [s["label"], ",".join(map(str, s["seeds"])), f"{s['img_per_s']:.0f}", f"{s['kimg'][-1]:.1f}", *fds,
                 f"{s['class_accuracy']:.3f}", reach, *speed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path, metric_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for s in summary:
        fd, sd = np.array(s["fd"]), np.array(s["fd_sd"])
        for ax, xs in zip(axes, (s["minutes"], s["kimg"])):
            ax.plot(xs, fd, marker="o", label=f"{s['label']} (n={len(s['seeds'])})")
            if len(s["seeds"]) > 1:
                ax.fill_between(xs, fd - sd, fd + sd, alpha=0.15)
    axes[0].set_xlabel("training wall-clock (min)")
    axes[1].set_xlabel("training images (kimg)")
    axes[0].set_ylabel(f"{metric_name} (lower is better)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------


def finished_runs(out: Path, args) -> dict[str, list[dict]]:
    """Every finished run in <out> with this budget, by row, whichever invocation (seeds, rows) made it."""
    by_row = {}
    for name in ROWS:
        runs = [json.loads(f.read_text()) for f in sorted((out / "runs").glob(f"{name}-seed*/eval.json"))]
        runs = [r for r in runs if (r["minutes"], r["eval_every"]) == (args.minutes, args.eval_every)]
        if runs:
            by_row[name] = runs
    return by_row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/train/fashion-mnist.yaml")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--baseline", default="dit_edm", choices=list(ROWS), help="row whose final FD is the target")
    p.add_argument("--minutes", type=float, default=3.0, help="training-clock budget per run")
    p.add_argument("--eval-every", type=float, default=1.5, help="minutes of training clock between evaluations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--unet-channels", type=int, default=32, help="U-Net DDPM row width (DDPM CIFAR-10: 128)")
    p.add_argument("--eval-config", default="configs/test/fashion-mnist.yaml")
    p.add_argument("--reference", default="fashion_mnist:test", help="eval_latent.py source of the reference set")
    p.add_argument("--out", default="results/bench-ttq")
    p.add_argument("overrides", nargs="*", help="train config overrides for every row (key=value)")
    args = p.parse_args(argv)
    n = args.minutes / args.eval_every
    if args.eval_every <= 0 or abs(n - round(n)) > 1e-6:
        p.error("--minutes must be a whole multiple of --eval-every")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    evaluator = None
    for seed in args.seeds:
        for name in args.rows:
            run_dir = out / "runs" / f"{name}-seed{seed}"
            result_file = run_dir / "eval.json"
            if result_file.exists():
                continue
            train_run(run_dir, ROWS[name], seed, args)
            evaluator = evaluator or Evaluator(args, out)
            result_file.write_text(json.dumps(evaluate_run(run_dir, name, seed, evaluator, args), indent=2) + "\n")
    by_row = finished_runs(out, args)
    if args.baseline not in by_row:
        sys.exit(f"error: baseline row {args.baseline} has no finished run in {out}; add it to --rows")
    summary = summarize(by_row, args.baseline)
    table = markdown_table(summary, args.baseline, args)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, out / "quality_vs_time.png", "FD_fmnist" if "fashion" in args.eval_config else "FID")
    print(table)


if __name__ == "__main__":
    main()
