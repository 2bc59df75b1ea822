"""Equal wall-clock comparison of noise-level strategies on the embedded default (Fashion-MNIST, pixels).

Each strategy trains the same model from scratch (the real train.py) for the same budget — `--kimg` images
(default; robust when other work shares the machine) or `--minutes` of wall-clock — then its EMA weights
generate samples scored with the offline Fashion-MNIST classifier features (FD_fmnist, lower is better;
class accuracy of conditional samples, higher is better). Each row also reports the measured training
img/s, so equal-image budgets can be read as wall-clock.

  python -m benchmarks.strategies --kimg 20 --num-samples 500 --out results/bench-strategies
  python -m benchmarks.strategies --minutes 4 --strategies edm speed min_snr adaptive_weight --seeds 0 1

Writes <out>/table.md and <out>/results.json; each run's directory keeps its telemetry plots.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks import REPO

# Strategy name -> config overrides. SpeeD and Min-SNR use their papers' defaults.
STRATEGIES = {
    "edm": [],
    "speed": ["diffusion.strategy.name=speed"],
    "speed_edm": ["diffusion.strategy.name=speed_edm"],
    "min_snr": ["diffusion.strategy.name=min_snr"],
    "adaptive_weight": ["diffusion.strategy.name=adaptive_weight"],
    "importance": ["diffusion.strategy.name=importance"],
    "learning_progress": ["diffusion.strategy.name=learning_progress"],
}


def run(cmd: list[str]) -> str:
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def training_summary(run_dir: Path) -> dict:
    """kimg reached and the mean training img/s over the run's log intervals."""
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return {"kimg": stats[-1]["kimg"], "img_per_s": sum(s["img_per_s"] for s in stats) / len(stats)}


def budget_args(args) -> list[str]:
    if args.minutes is not None:
        return ["train.total_kimg=100000", "--stop-after-min", str(args.minutes)]
    return [f"train.total_kimg={args.kimg}"]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.strategies", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/train/fashion-mnist.yaml")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--kimg", type=float, default=20.0, help="training images per run (thousands)")
    budget.add_argument("--minutes", type=float, help="training wall-clock per run instead of --kimg")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--eval-config", default="configs/test/fashion-mnist.yaml")
    p.add_argument("--out", default="results/bench-strategies")
    p.add_argument("overrides", nargs="*", help="extra train config overrides for every run")
    args = p.parse_args()
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    ref = out / "fmnist-test-ref.npz"
    if not ref.exists():
        run(["eval_latent.py", "ref", "--config", args.eval_config, "--source", "fashion_mnist:test", "--out", str(ref)])
    results = []
    for seed in args.seeds:
        for name in args.strategies:
            run_dir = out / f"{name}-seed{seed}"
            run(["train.py", "--config", args.config, f"run_dir={run_dir}", f"train.seed={seed}",
                 "train.sample_kimg=100000", "train.snapshot_kimg=100000", *budget_args(args), *STRATEGIES[name],
                 *args.overrides])
            stdout = run(["eval_latent.py", "--config", args.eval_config, "--ckpt", str(run_dir), "--ref", str(ref),
                          "--num-samples", str(args.num_samples)])
            metrics = json.loads(stdout.strip().splitlines()[-1])
            row = {"strategy": name, "seed": seed, **training_summary(run_dir), **metrics}
            results.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| strategy | seed | kimg | train img/s | FD_fmnist ↓ | class accuracy ↑ | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['kimg']:.1f} | {r['img_per_s']:.0f} | {r['fd']:.2f} | "
                     f"{r['class_accuracy']:.3f} | {r.get('precision', float('nan')):.3f} | "
                     f"{r.get('recall', float('nan')):.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
