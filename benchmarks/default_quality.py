"""The embedded default's sample quality: the regression check of README command 1, and the recipe sweep.

`run` trains a recipe with the real train.py (configs/train/fashion-mnist.yaml plus the recipe's overrides) at
the given seeds and image budget, then scores it with the suite's own evaluation (eval_latent.py's driver,
configs/test/fashion-mnist.yaml: FD_fmnist and class accuracy, n samples): the classic EMA the run writes, and,
when the run tracks power EMAs, the post-hoc EMA of each --sigma-rels (reconstruct_ema.py's path). Each scored
(recipe, seed, kimg) writes one small JSON under docs/benchmarks/default/runs/, so later sessions add seeds
instead of re-running; `report` prints the table from those files alone (mean, sd, paired differences with a
Student-t interval against --baseline).

  python -m benchmarks.default_quality run --recipe default --seeds 0 1 2 3
  python -m benchmarks.default_quality run --recipe readme-v1 --seeds 0 1 2 3 --threads 1
  python -m benchmarks.default_quality run --recipe default --seeds 0 --kimg 16 --num-samples 1000  # a sweep rung
  python -m benchmarks.default_quality report --baseline readme-v1

Successive halving: the first k kimg of a run are exactly a shorter run (constant lr after warm-up, constant
mask ratio, EMA and post-hoc snapshots by images seen), so re-running `run` with a larger --kimg resumes the
same run directory and trains only the extra images. Working files go to --work (not committed).
"""

import argparse
import json
import math
import os
from pathlib import Path

from benchmarks import REPO
from benchmarks.commands import python
from benchmarks.fmnist_recipes import README_V1, README_V2
from utils.atomic import atomic_write_text

CONFIG = "configs/train/fashion-mnist.yaml"

# A recipe = overrides on configs/train/fashion-mnist.yaml (+ sampler overrides on the evaluation config).
# "default" is the config file as it stands; "readme-v1" is the default the README shipped before the recipe
# sweep (issue #33), so it stays measurable as the baseline after the file changed.
HEUN_18 = ["sampling.num_steps=18", "sampling.s_churn=0"]
RECIPES: dict[str, tuple[list[str], list[str]]] = {
    "default": ([], []),
    "readme-v1": (README_V1, HEUN_18),
    # the sweep's rungs, named by what they change from readme-v1 (docs/benchmarks/default/sweep/)
    "lr2e-3": ([*README_V1, "optim.lr=2e-3", "optim.warmup_kimg=2"], HEUN_18),
    "w128-lr2e-3": (README_V2, HEUN_18),  # = fmnist_recipes.README_V2
}


def train(run_dir: Path, recipe: str, seed: int, kimg: float, threads: int | None, extra: list[str]) -> None:
    """train.py to `kimg` (resuming the run directory when it holds a shorter run), a classic EMA snapshot every
    8 kimg (or once, for shorter budgets), no grids."""
    train_overrides, every = RECIPES[recipe][0], min(8.0, kimg)
    python(["train.py", "--config", CONFIG, f"run_dir={run_dir}", f"train.seed={seed}", f"train.total_kimg={kimg}",
            f"train.snapshot_kimg={every}", "train.keep_snapshots=0", "train.sample_kimg=0",
            f"train.checkpoint_kimg={every}",
            *train_overrides, *extra], threads)


def run_stats(run_dir: Path, kimg: float) -> dict:
    """Training minutes and img/s at `kimg` from the run's stats.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    row = min(rows, key=lambda r: abs(r["kimg"] - kimg))
    return {"train_min": row["train_min"], "img_per_s": kimg * 1000 / (row["train_min"] * 60)}


class Evaluator:
    """The feature network and reference statistics, loaded once; scores a network with a sampler."""

    def __init__(self, eval_config: str, reference: str, work: Path, device="cpu"):
        from evaluation.config import load_eval_config
        from evaluation.evaluate import build_feature_net, reference_pool_features
        from evaluation.metrics import load_reference

        self.device, self.eval_config = device, eval_config
        base = load_eval_config(eval_config)
        self.feature_net = build_feature_net(base, device)
        self.ref = load_reference(str(reference_path(eval_config, reference, work)), self.feature_net)
        self.ref_pool = reference_pool_features(self.ref, self.feature_net, base, device)

    def __call__(self, net, meta: dict, eval_overrides: list[str], num_samples: int) -> dict:
        from evaluation.config import load_eval_config
        from evaluation.evaluate import evaluate_network

        cfg = load_eval_config(self.eval_config, [*eval_overrides, f"num_samples={num_samples}"])
        metrics = evaluate_network(net, meta, cfg, self.feature_net, self.ref, self.ref_pool, self.device)
        return {k: float(v) if isinstance(v, float) else v for k, v in metrics.items()}


def reference_path(eval_config: str, reference: str, work: Path) -> Path:
    """Reference statistics of `reference` (an eval_latent.py source), computed once into the work folder."""
    path = work / f"reference-{Path(eval_config).stem}.npz"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        python(["eval_latent.py", "ref", "--config", eval_config, "--source", reference, "--out", str(path)], None)
    return path


def classic_ema(run_dir: Path, kimg: float) -> Path | None:
    """The classic EMA at `kimg`: its snapshot, or the EMA of the checkpoint taken there (the end of a run whose
    budget is not a multiple of the snapshot interval); None when the run has neither."""
    snapshot = run_dir / "snapshots" / f"ema-{kimg:011.3f}.safetensors"
    if snapshot.exists():
        return snapshot
    if not (run_dir / "stats.jsonl").exists():
        return None
    last = json.loads((run_dir / "stats.jsonl").read_text().splitlines()[-1])
    kimg_per_step = last["kimg"] / last["step"]
    matching = [d / "ema.safetensors" for d in (run_dir / "checkpoints").glob("[0-9]*")
                if (d / "ema.safetensors").exists() and round(int(d.name) * kimg_per_step, 3) == round(kimg, 3)]
    return matching[0] if matching else None


def score_run(evaluate: "Evaluator", run_dir: Path, recipe: str, kimg: float, sigma_rels: list[float],
              num_samples: int, sampler: list[str]) -> list[dict]:
    """The classic EMA at `kimg` and the post-hoc EMA of each σ_rel (when the run has power snapshots)."""
    from diffusion.network import load_for_sampling
    from training.posthoc_ema import EMATarget, power_snapshots, reconstruct

    eval_overrides = [*RECIPES[recipe][1], *sampler]
    scores = [{"ema": "classic", **evaluate(*load_for_sampling(classic_ema(run_dir, kimg)), eval_overrides,
                                            num_samples)}]
    if sigma_rels and (run_dir / "posthoc").is_dir():
        snaps = power_snapshots(run_dir)
        step = round(kimg * 1000 / snaps[0].batch_size)
        for sigma_rel in sigma_rels:
            recon = reconstruct(snaps, EMATarget(sigma_rel=sigma_rel), step)
            metrics = evaluate(*recon.network(), eval_overrides, num_samples)
            scores.append({"ema": sigma_rel, "profile_residual": recon.residual, **metrics})
    for row in scores:
        print(f"  {recipe} {run_dir.name} {kimg:g} kimg ema {row['ema']}: FD {row['fd']:.2f}, class accuracy "
              f"{row['class_accuracy']:.3f}", flush=True)
    return scores


def result_path(results: Path, recipe: str, seed: int, kimg: float, num_samples: int, sampler_tag: str) -> Path:
    return results / f"{recipe}-s{seed}-{kimg:g}kimg-n{num_samples}{sampler_tag}.json"


def sampler_tag(sampler: list[str]) -> str:
    return "".join("-" + s.replace("sampling.", "").replace("=", "") for s in sampler)


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    if args.kimg is None:
        from training.config import load_config

        args.kimg = load_config(CONFIG).train.total_kimg  # the budget README command 1 trains

    torch.set_num_threads(os.cpu_count() or 1)  # scoring uses every core, whatever --threads trained with
    evaluate = None
    for seed in args.seeds:
        out = result_path(Path(args.results), args.recipe, seed, args.kimg, args.num_samples, sampler_tag(args.sampler))
        if out.exists():
            print(f"{out.name}: done", flush=True)
            continue
        run_dir = Path(args.work) / f"{args.recipe}-s{seed}"
        if classic_ema(run_dir, args.kimg) is None:
            train(run_dir, args.recipe, seed, args.kimg, args.threads, args.set)
        evaluate = evaluate or Evaluator(args.eval_config, args.reference, Path(args.work))
        scores = score_run(evaluate, run_dir, args.recipe, args.kimg, args.sigma_rels, args.num_samples, args.sampler)
        record = {"recipe": args.recipe, "seed": seed, "kimg": args.kimg, "num_samples": args.num_samples,
                  "sampler": args.sampler, "train_overrides": RECIPES[args.recipe][0] + args.set,
                  "threads": args.threads, **run_stats(run_dir, args.kimg), "scores": scores}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(record, indent=1) + "\n")


# ----------------------------------------------------------------------------
# report: the tables from the committed files alone.


def load_results(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def score_of(record: dict, ema) -> dict | None:
    return next((s for s in record["scores"] if s["ema"] == ema), None)


def group_key(record: dict) -> tuple:
    """(recipe, kimg, n, the evaluation overrides: the recipe's own and the run's --sampler)."""
    overrides = RECIPES.get(record["recipe"], ([], []))[1] + record["sampler"]
    return record["recipe"], record["kimg"], record["num_samples"], " ".join(overrides) or "config"


def mean_sd(values: list[float]) -> str:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return f"{mean:.3f} ± {sd:.3f}" if abs(mean) < 10 else f"{mean:.1f} ± {sd:.1f}"


def summary_table(groups: dict[tuple, dict[int, dict]]) -> list[str]:
    lines = ["| recipe | kimg | n | sampler overrides | EMA | seeds | FD_fmnist (mean ± sd) | class accuracy | "
             "train min (threads, shared machine) |", "|---|---|---|---|---|---|---|---|---|"]
    for (recipe, kimg, n, sampler), by_seed in sorted(groups.items()):
        first = next(iter(by_seed.values()))
        for ema in [s["ema"] for s in first["scores"]]:
            scored = [score_of(r, ema) for r in by_seed.values() if score_of(r, ema)]
            minutes = mean_sd([r["train_min"] for r in by_seed.values()])
            lines.append(f"| {recipe} | {kimg:g} | {n} | {sampler} | {ema} | {len(scored)} | "
                         f"{mean_sd([s['fd'] for s in scored])} | {mean_sd([s['class_accuracy'] for s in scored])} | "
                         f"{minutes} ({first['threads'] or 'all'}) |")
    return lines


def paired_table(groups: dict[tuple, dict[int, dict]], baseline: str) -> list[str]:
    """Each recipe's classic EMA (what generate.py samples) against the baseline's, seed by seed, at the same n:
    the mean difference with its Student-t 95 % interval, and the FD ratio."""
    from benchmarks.stats import t_interval

    lines = ["| recipe (kimg, sampler) vs baseline | seeds | FD difference [t 95 %] | FD ratio | "
             "class accuracy difference [t 95 %] |", "|---|---|---|---|---|"]
    bases = {k: v for k, v in groups.items() if k[0] == baseline}
    for key, by_seed in sorted(groups.items()):
        if key[0] == baseline:
            continue
        for base_key, base in sorted(bases.items()):
            if base_key[2] != key[2]:
                continue
            seeds = sorted(set(by_seed) & set(base))
            if not seeds:
                continue
            fd = [score_of(by_seed[s], "classic")["fd"] - score_of(base[s], "classic")["fd"] for s in seeds]
            acc = [score_of(by_seed[s], "classic")["class_accuracy"] - score_of(base[s], "classic")["class_accuracy"]
                   for s in seeds]
            ratio = sum(score_of(by_seed[s], "classic")["fd"] / score_of(base[s], "classic")["fd"] for s in seeds)
            (flo, fhi), (alo, ahi) = t_interval(fd), t_interval(acc)
            lines.append(f"| {key[0]} ({key[1]:g}, {key[3]}) vs {base_key[0]} ({base_key[1]:g}, {base_key[3]}) | "
                         f"{len(seeds)} | {sum(fd) / len(fd):+.1f} [{flo:+.1f}, {fhi:+.1f}] | {ratio / len(seeds):.2f} | "
                         f"{sum(acc) / len(acc):+.3f} [{alo:+.3f}, {ahi:+.3f}] |")
    return lines


def sweep_table(folder: Path) -> list[str]:
    """The recipe sweep's screening rungs (one JSON per run and budget: overrides on readme-v1, seed 0)."""
    lines = ["| rung | overrides on readme-v1 | kimg | n | EMA | FD_fmnist | class accuracy | img/s (1 thread, shared) |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text())
        for score in rec.get("scores", []):  # rungs only; the sampler and EMA studies are study_table's
            lines.append(f"| {rec['name']} | {' '.join(rec['overrides']) or '—'} | {rec['kimg']:g} | "
                         f"{rec['num_samples']} | {score['ema']} | {score['fd']:.1f} | {score['class_accuracy']:.3f} | "
                         f"{rec['img_per_s_1thread_shared']:.1f} |")
    return lines


def study_table(folder: Path) -> list[str]:
    """The sampler study (eval_latent.py --out of one final snapshot, sampler-<run>-heun<steps>-churn<S>.json)
    and the post-hoc EMA study (reconstruct_ema.py sweep --out, ema-<run>.json) of the chosen recipe."""
    lines = ["| study file | variant | n | FD_fmnist | class accuracy |", "|---|---|---|---|---|"]
    for path in sorted(folder.glob("sampler-*.json")):
        rec = json.loads(path.read_text())
        variant = path.stem.rsplit("-", 2)
        lines.append(f"| {path.name} | Heun {variant[1][4:]} steps, S_churn {variant[2][5:]} | {rec['num_samples']} | "
                     f"{rec['fd']:.1f} | {rec['class_accuracy']:.3f} |")
    for path in sorted(folder.glob("ema-*.json")):
        for row in json.loads(path.read_text())["rows"]:
            lines.append(f"| {path.name} | {row['target']} (profile residual {row['profile_residual']:.3f}) | "
                         f"{row['num_samples']} | {row['fd']:.1f} | {row['class_accuracy']:.3f} |")
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    groups: dict[tuple, dict[int, dict]] = {}
    for rec in load_results(Path(args.results)):
        groups.setdefault(group_key(rec), {})[rec["seed"]] = rec
    text = "\n".join([DOC_HEADER, "## Every scored group", "", *summary_table(groups), "",
                      f"## Paired against {args.baseline} (classic EMA, same seeds, same n)", "",
                      *paired_table(groups, args.baseline), "",
                      "## The recipe sweep's screening rungs (seed 0)", "", SWEEP_TEXT, "",
                      *sweep_table(Path(args.results).parent / "sweep"), "",
                      "## Sampler and post-hoc EMA of the chosen recipe (final snapshot; the seed is in the file name)", "",
                      STUDY_TEXT, "", *study_table(Path(args.results).parent / "sweep"), ""])
    print(text)
    if args.write_docs:
        atomic_write_text(Path(args.results).parent / "README.md", text)


SWEEP_TEXT = """Successive halving on the image grid: each rung trains readme-v1 with the overrides shown (seed 0,
one thread, two runs side by side with scoring alongside, so img/s are only comparable within a pair) to a
short budget and scores its classic EMA on n samples (Heun 18); the first k kimg of a longer run are exactly the
shorter run, so a promoted rung resumes. Runs of different width are compared at equal wall-clock, not equal
images: the 128-wide model runs ~1.8x the img/s of the 192-wide one. The train command of a rung is
`python train.py --config configs/train/fashion-mnist.yaml <readme-v1 overrides> <rung overrides>
train.total_kimg=K train.seed=0 train.posthoc_ema.sigma_rels=[0.05,0.1] train.posthoc_ema.snapshot_kimg=2`."""

STUDY_TEXT = """Each file scores one final snapshot (112 kimg, `checkpoints/000003500`) of a run of the chosen recipe on
n samples: the sampler study with `python eval_latent.py --config configs/test/fashion-mnist.yaml --ckpt <ckpt>
--ref <ref> num_samples=1000 sampling.num_steps=S sampling.s_churn=C --out <file>`, the post-hoc EMA study with
`python reconstruct_ema.py sweep --run <run> --config configs/test/fashion-mnist.yaml --ref <ref> --sigma-rel ...
--halflife-kimg 5 --rampup-ratio 0.1 num_samples=1000 --out <file>` (the classic row is the EMA the run writes,
half-life 5 kimg, reconstructed from the power snapshots: residual < 1e-4). Same seeds for every variant of a
file, so the differences within a file are paired."""

DOC_HEADER = """# The embedded default's sample quality (generated by `python -m benchmarks.default_quality report --write-docs`)

Each row: `configs/train/fashion-mnist.yaml` with the recipe's overrides, trained with the real train.py at
`train.seed` = seed, scored with the suite's own evaluation (`configs/test/fashion-mnist.yaml`: FD_fmnist in the
features of the suite's Fashion-MNIST classifier, and that classifier's accuracy on the requested classes) on n
samples with the sampler of the evaluation config plus the row's sampler overrides. `classic` is the EMA that
training writes and generate.py samples; a number in the EMA column is a post-hoc EMA σ_rel reconstructed from
the run's power snapshots. Paired rows difference the two recipes seed by seed (Student-t 95 % interval).
The recipe sweep's screening results (shorter budgets, fewer samples) are in `sweep/`.
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.default_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and score a recipe at some seeds")
    run.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--kimg", type=float, help="image budget (default: the config's train.total_kimg)")
    run.add_argument("--num-samples", type=int, default=5000)
    run.add_argument("--sigma-rels", type=float, nargs="*", default=[], help="post-hoc EMA lengths to score too")
    run.add_argument("--sampler", nargs="*", default=[], help="evaluation overrides, e.g. sampling.num_steps=40")
    run.add_argument("--set", nargs="*", default=[], help="extra training overrides (not part of the recipe name)")
    run.add_argument("--threads", type=int, help="training threads (default: all; 1 runs two side by side)")
    run.add_argument("--work", default=str(REPO / "results" / "default-quality"), help="run dirs (not committed)")
    run.add_argument("--eval-config", default=str(REPO / "configs/test/fashion-mnist.yaml"))
    run.add_argument("--reference", default="fashion_mnist:test", help="eval_latent.py source of the reference set")
    for sub_parser in (run, sub.add_parser("report", help="the tables from the committed result files")):
        sub_parser.add_argument("--results", default=str(REPO / "docs/benchmarks/default/runs"),
                                help="committed per-run result files")
    report = sub.choices["report"]
    report.add_argument("--baseline", default="readme-v1")
    report.add_argument("--write-docs", action="store_true", help="also write docs/benchmarks/default/README.md")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    {"run": cmd_run, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
