"""Time-to-quality: sample quality vs training images and wall-clock, paired over seeds.

The protocol (README "Time-to-quality"; REFERENCE.md §7):
- Quality on an image grid. Every row trains from scratch with the real train.py for the same image budget
  (--kimg), writing an EMA snapshot at --points evenly spaced points; each snapshot is scored with the same
  sampler and the same number of samples n. On a CPU a seeded run is deterministic, so machine load cannot
  move its quality. Seed k fixes, for every row, the initialisation, data order, noise / mask / label-drop
  draws (σ is drawn last, see diffusion/step_draws.py) and the evaluation noise and classes; a seed's rows run
  in an order shuffled by the seed.
- Time from a side-by-side throughput measurement (`throughput`): every row's training img/s measured in one
  invocation on one machine, rows interleaved over several rounds. Images convert to minutes with it.
- Endpoints: primary, the mean of ln FD over the wall-clock window two rows share (area under the log-FD
  curve); secondary, the same over images, the final FD, the minutes to reach the DiT + EDM row's final FD
  of the same seed, the final class accuracy. Statistics: paired differences per seed, their mean with a
  bootstrap 95 % interval, Wilcoxon p, probability of improvement (benchmarks/paired_stats.py).
- Results live in the repo: each finished run writes a small JSON under docs/benchmarks/ttq/<protocol>/runs/,
  throughput rounds under .../throughput/; `report` regenerates the table, the plot and the README section
  from those files alone, so later work adds seeds instead of re-running.

  python benchmarks/time_to_quality.py run --seeds 0 1 2 --rows maskdit_edm dit_edm maskdit_excess
  python benchmarks/time_to_quality.py throughput --rounds 3
  python benchmarks/time_to_quality.py report

Re-running `run` skips finished runs (their JSON exists); a run stopped during training resumes from its
checkpoint, one stopped during evaluation is only evaluated. Working files (checkpoints, snapshots) go to
--work (default results/ttq-work), which is not committed.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from paired_stats import bootstrap_ci, paired_comparison, resolved, seeds_needed  # noqa: E402

README_BEGIN, README_END = "<!-- ttq-table:begin -->", "<!-- ttq-table:end -->"


@dataclass
class Row:
    label: str
    train_overrides: list[str]
    eval_overrides: list[str] = field(default_factory=list)
    trains_as: str | None = None  # an evaluation variant: scores the snapshots of this row's run (same training)


DIT = ["model.use_decoder=false", "mask.ratio=0"]
# TREAD (REFERENCE.md §5): half the tokens bypass blocks 2..B−4; on the 6-block embedded default that is 2..2,
# so the benchmark routes blocks 1..3 (the middle half, the released DiT-B/2 config's share of 7/12 rounded).
TREAD = ["model.route.ratio=0.5", "model.route.start=1", "model.route.end=3"]

# Every row shares the embedded default's optimiser (batch 32, lr 6e-4, 1 kimg warmup, EMA half-life 5 kimg)
# unless it says otherwise. The seeds' own claims are tested where they were made: SpeeD and Min-SNR against
# uniform-t ε-loss DDPM training on the same DiT backbone.
ROWS = {
    "maskdit_edm": Row("MaskDiT 50% + EDM", []),
    "dit_edm": Row("DiT (no mask) + EDM", DIT),
    "dit_ddpm": Row("DiT + DDPM (uniform t, ε-loss)", [*DIT, "diffusion.strategy.name=ddpm_uniform"]),
    "dit_speed": Row("DiT + SpeeD", [*DIT, "diffusion.strategy.name=speed"]),
    "dit_min_snr": Row("DiT + Min-SNR-5 (uniform t)", [*DIT, "diffusion.strategy.name=min_snr",
                                                       "diffusion.strategy.params.sampling=ddpm_uniform"]),
    "dit_tread": Row("DiT + TREAD routing 50%", [*DIT, *TREAD]),
    "maskdit_tread": Row("MaskDiT 50% + TREAD routing 50% of the visible tokens", TREAD),
    "maskdit_speed": Row("MaskDiT + SpeeD", ["diffusion.strategy.name=speed"]),
    "maskdit_min_snr": Row("MaskDiT + Min-SNR-5", ["diffusion.strategy.name=min_snr"]),
    "maskdit_importance": Row("MaskDiT + importance (adaptive)", ["diffusion.strategy.name=importance"]),
    "maskdit_lp": Row("MaskDiT + learning progress (adaptive)", ["diffusion.strategy.name=learning_progress"]),
    "maskdit_excess": Row("MaskDiT + excess loss (adaptive, p/q)", ["diffusion.strategy.name=excess_loss"]),
    "maskdit_excess_sampling": Row("MaskDiT + excess loss (adaptive, sampling)", [
        "diffusion.strategy.name=excess_loss", "diffusion.strategy.params.keep_objective=false"]),
    # adaptive proposals on the best fixed objective (Min-SNR-5), keeping it by p/q weights: same objective as
    # maskdit_min_snr, fewer draws spent where Min-SNR's weight leaves almost nothing to learn
    "maskdit_min_snr_excess": Row("MaskDiT + Min-SNR-5 + excess loss (adaptive, p/q)", [
        "diffusion.strategy.name=excess_loss", "diffusion.strategy.params.min_snr_gamma=5"]),
    "maskdit_min_snr_importance": Row("MaskDiT + Min-SNR-5 + importance (adaptive, p/q)", [
        "diffusion.strategy.name=importance", "diffusion.strategy.params.min_snr_gamma=5"]),
    "maskdit_adaptive_weight": Row("MaskDiT + EDM2 learned loss weighting (adaptive)", [
        "diffusion.strategy.name=adaptive_weight"]),
    "maskdit_edm2_pixel": Row("MaskDiT + EDM2 pixel preset (P_mean −0.8, P_std 1.6)", [
        "diffusion.strategy.params.p_mean=-0.8", "diffusion.strategy.params.p_std=1.6"]),
    # The bf16 residual stream's quality A/B (training/config.py model.residual_bf16): compare these two with each
    # other over the image grid (a CPU without bf16 units runs them ~7x slower, so their img/s says nothing).
    "maskdit_bf16": Row("MaskDiT + EDM, bf16 autocast", ["train.mixed_precision=bf16"]),
    "maskdit_bf16_residual": Row("MaskDiT + EDM, bf16 autocast + bf16 residual stream", [
        "train.mixed_precision=bf16", "model.residual_bf16=true"]),
    "unet_ddpm": Row("U-Net DDPM (ε, uniform t)", [
        "model.arch=ddpm_unet", "model.precond=vp", "mask.ratio=0", "model.unet_channels=32",
        "diffusion.strategy.name=ddpm_uniform", "optim.lr=2e-4", "optim.grad_clip=1"],
        ["sampling.sampler=ddpm", "sampling.num_steps=50", "sampling.clip_denoised=true"]),
    # the same U-Net snapshots sampled without clipping x̂0: is the row's FD a sampler artefact? (issue #12)
    "unet_ddpm_noclip": Row("U-Net DDPM, sampled without x̂0 clipping", [],
                            ["sampling.sampler=ddpm", "sampling.num_steps=50"], trains_as="unet_ddpm"),
}
REFERENCE_ROW, TARGET_ROW = "maskdit_edm", "dit_edm"
ADAPTIVE_ROWS = ("maskdit_importance", "maskdit_lp", "maskdit_excess", "maskdit_excess_sampling",
                 "maskdit_adaptive_weight", "maskdit_min_snr_excess", "maskdit_min_snr_importance")
FIXED_MASKDIT_ROWS = ("maskdit_edm", "maskdit_speed", "maskdit_min_snr", "maskdit_edm2_pixel")
SEED_CLAIMS = (("dit_speed", "dit_ddpm"), ("dit_min_snr", "dit_ddpm"), ("dit_tread", "dit_edm"),
               ("maskdit_tread", "maskdit_edm"), ("maskdit_bf16_residual", "maskdit_bf16"),
               ("unet_ddpm", "unet_ddpm_noclip"))


@dataclass
class Protocol:
    """What makes runs comparable: same config, image budget, grid, sampler and n."""

    config: str = "configs/train/fashion-mnist.yaml"
    kimg: float = 6.144
    points: int = 6
    num_samples: int = 150
    num_steps: int = 8
    eval_config: str = "configs/test/fashion-mnist.yaml"
    threads: int = 1

    def tag(self) -> str:
        name = Path(self.config).stem
        return f"{name}-{self.kimg:g}kimg-{self.points}pts-n{self.num_samples}-heun{self.num_steps}-t{self.threads}"


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}"


def python(args: list[str], threads: int | None = None) -> str:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


# ----------------------------------------------------------------------------
# run: train on the image budget, evaluate the snapshots, write the run's JSON.


def train_run(run_dir: Path, row: Row, seed: int, proto: Protocol, overrides: list[str]) -> None:
    """train.py for proto.kimg with a snapshot every kimg/points; re-running resumes its checkpoint."""
    every = proto.kimg / proto.points
    python(["train.py", "--config", proto.config, f"run_dir={run_dir}", f"train.seed={seed}",
            f"train.total_kimg={proto.kimg}", f"train.snapshot_kimg={every}", "train.keep_snapshots=0",
            "train.sample_kimg=0", f"train.checkpoint_kimg={every}", "train.keep_checkpoints=1",
            f"train.log_kimg={every}", *overrides, *row.train_overrides], threads=proto.threads)


def grid_kimg(proto: Protocol) -> list[float]:
    """The evaluation grid: `points` evenly spaced snapshot points up to the budget, in kimg (3 decimals, as
    the snapshot file names)."""
    return [round(proto.kimg * (i + 1) / proto.points, 3) for i in range(proto.points)]


def snapshot_kimg(path: Path) -> float:
    return float(re.search(r"ema-(\d+\.\d+)\.safetensors$", path.name).group(1))  # ema-<kimg:011.3f>...


def extend_run(source: Path, run_dir: Path, proto: Protocol) -> bool:
    """Start `run_dir` from `source`, the same row and seed trained for a shorter budget: copy its checkpoint,
    logs and the snapshots that lie on this protocol's grid, so train.py resumes and trains only the extra images.

    The result equals training from scratch: with a constant mask schedule nothing in training depends on
    total_kimg (lr warm-up, EMA ramp-up and data order go by images seen), and resume continues bit for bit
    (tests/test_reliability.py). Extending only saves time, so where `source` cannot be used this says why in one
    line and returns False: the run then trains from scratch, to the same result."""
    reason = why_not_extendable(source, proto)
    if reason:
        print(f"--extend-from: {source}: {reason}; training {run_dir.name} from scratch", flush=True)
        return False
    trained = trained_snapshots(source)
    run_dir.mkdir(parents=True)
    shutil.copytree(source / "checkpoints", run_dir / "checkpoints")
    for name in ("stats.jsonl", "log.txt"):
        shutil.copy2(source / name, run_dir / name)
    (run_dir / "snapshots").mkdir()
    for kimg in grid_kimg(proto):
        if kimg in trained:
            shutil.copy2(trained[kimg], run_dir / "snapshots" / trained[kimg].name)
    return True


def trained_snapshots(run_dir: Path) -> dict[float, Path]:
    return {snapshot_kimg(p): p for p in (run_dir / "snapshots").glob("ema-*.safetensors")}


def why_not_extendable(source: Path, proto: Protocol) -> str | None:
    """None when `source` can start a run of `proto`; otherwise the reason."""
    from omegaconf import OmegaConf

    from training.checkpoint import CheckpointError, latest_checkpoint, verify

    if not (source / "config.yaml").exists():
        return "no run there (no config.yaml)"
    mask = OmegaConf.load(source / "config.yaml").mask
    if mask.schedule != "constant" and mask.ratio_end != mask.ratio:
        return f"its mask.schedule {mask.schedule} depends on total_kimg, so a longer run would not continue it"
    checkpoint = latest_checkpoint(source)
    if checkpoint is None:
        return "no checkpoint"
    try:
        verify(checkpoint)
    except CheckpointError as err:
        return f"its checkpoint cannot be used ({err})"
    trained = trained_snapshots(source)
    missing = [k for k in grid_kimg(proto) if k <= max(trained, default=0.0) and k not in trained]
    if not trained or missing:
        return f"no EMA snapshot at kimg {missing or grid_kimg(proto)[:1]} of this grid"
    return None


def snapshots(run_dir: Path, proto: Protocol) -> list[Path]:
    found = sorted((run_dir / "snapshots").glob("ema-*.safetensors"))
    if len(found) != proto.points:
        raise RuntimeError(f"{run_dir}: {len(found)} of {proto.points} evaluation snapshots were written")
    return found


class Evaluator:
    """Holds the feature network and reference statistics; scores a snapshot with the protocol's sampler."""

    def __init__(self, proto: Protocol, reference: str, work: Path):
        from evaluation.config import load_eval_config
        from evaluation.evaluate import build_feature_net, reference_pool_features
        from evaluation.metrics import load_reference

        self.proto, self.device = proto, torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base = load_eval_config(proto.eval_config)
        ref_path = work / f"reference-{Path(proto.eval_config).stem}.npz"
        if not ref_path.exists():
            python(["eval_latent.py", "ref", "--config", proto.eval_config, "--source", reference, "--out",
                    str(ref_path)])
        self.ref = load_reference(str(ref_path))
        self.feature_net = build_feature_net(base, self.device)
        self.ref_pool = reference_pool_features(self.ref, self.feature_net, base, self.device)

    def __call__(self, snapshot: Path, seed: int, overrides: list[str], grid: Path | None) -> dict:
        from evaluation.config import load_eval_config
        from evaluation.evaluate import evaluate_snapshot

        # evaluation seeds depend on the run's seed only: the same noise and classes for every row of a seed
        cfg = load_eval_config(self.proto.eval_config, [
            f"num_samples={self.proto.num_samples}", f"sampling.num_steps={self.proto.num_steps}", "sampling.sampler=edm",
            f"seed_start={seed * 1_000_000}", *overrides])
        return evaluate_snapshot(snapshot, cfg, self.feature_net, self.ref, self.ref_pool, self.device, grid)


def evaluate_run(run_dir: Path, name: str, seed: int, evaluator: Evaluator, proto: Protocol) -> dict:
    points = []
    found = snapshots(run_dir, proto)
    for i, path in enumerate(found):
        kimg = snapshot_kimg(path)
        grid = run_dir / f"grid-final-{name}.png" if i == len(found) - 1 else None
        metrics = evaluator(path, seed, ROWS[name].eval_overrides, grid)
        points.append({"kimg": kimg, **metrics})
        print(json.dumps({"row": name, "seed": seed, **points[-1]}), flush=True)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return {"row": name, "seed": seed, "protocol": proto.__dict__, "machine": machine(),
            "train_minutes": stats[-1]["train_min"], "points": points}


def run_dir_of(work: Path, name: str, seed: int) -> Path:
    """The training run a row's seed is scored on: an evaluation variant shares its row's run."""
    return work / f"{ROWS[name].trains_as or name}-seed{seed}"


def run_command(args) -> None:
    proto = protocol_from(args)
    results = REPO / args.results / proto.tag() / "runs"
    results.mkdir(parents=True, exist_ok=True)
    work = (REPO / args.work / proto.tag()).resolve()
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(proto.threads)
    evaluator = None
    for seed in args.seeds:
        order = list(args.rows)
        random.Random(seed).shuffle(order)  # a seed's rows back to back, in a seed-dependent order
        for name in order:
            result_file = results / f"{name}-seed{seed}.json"
            if result_file.exists():
                continue
            run_dir, trained = run_dir_of(work, name, seed), ROWS[ROWS[name].trains_as or name]
            started = time.time()
            if args.extend_from and not run_dir.exists():
                extend_run(work.parent / args.extend_from / run_dir.name, run_dir, proto)
            train_run(run_dir, trained, seed, proto, args.overrides)  # resumes, or returns at once when complete
            evaluator = evaluator or Evaluator(proto, args.reference, work)
            result = evaluate_run(run_dir, name, seed, evaluator, proto)
            result_file.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{name} seed {seed}: done in {(time.time() - started) / 60:.1f} min", flush=True)


# ----------------------------------------------------------------------------
# throughput: every row's training img/s, side by side, interleaved rounds.


def measure_img_per_s(name: str, proto: Protocol, steps: int, threads: int, work: Path, overrides: list[str]) -> float:
    """Training img/s of one row: `steps` optimizer steps after as many warm-up steps (the first log tick)."""
    run_dir = work / f"throughput-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    batch = 32
    kimg = 2 * steps * batch / 1000
    python(["train.py", "--config", proto.config, f"run_dir={run_dir}", f"train.total_kimg={kimg}",
            f"train.log_kimg={kimg / 2}", "train.snapshot_kimg=0", "train.sample_kimg=0",
            f"train.checkpoint_kimg={kimg}", f"train.batch_size={batch}", *overrides, *ROWS[name].train_overrides],
           threads=threads)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    shutil.rmtree(run_dir, ignore_errors=True)
    return float(stats[-1]["img_per_s"])  # the second tick: steady state


def throughput_command(args) -> None:
    proto = protocol_from(args)
    out = REPO / args.results / proto.tag() / "throughput"
    out.mkdir(parents=True, exist_ok=True)
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rounds = []
    for r in range(args.rounds):
        order = [name for name in args.rows if ROWS[name].trains_as is None]  # variants train as their row
        random.Random(1000 + r).shuffle(order)
        rounds.append({name: measure_img_per_s(name, proto, args.steps, args.throughput_threads, work,
                                               args.overrides) for name in order})
        print(json.dumps({"round": r, **rounds[-1]}), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {"machine": machine(), "threads": args.throughput_threads, "steps": args.steps, "rounds": rounds,
              "when": stamp}
    (out / f"{stamp}.json").write_text(json.dumps(record, indent=1) + "\n")


# ----------------------------------------------------------------------------
# report: endpoints, paired statistics, table, plot, README section — from the committed files only.


def load_runs(root: Path) -> dict[str, dict[int, dict]]:
    by_row: dict[str, dict[int, dict]] = {}
    for f in sorted((root / "runs").glob("*.json")):
        run = json.loads(f.read_text())
        by_row.setdefault(run["row"], {})[run["seed"]] = run
    return by_row


def load_throughput(root: Path) -> dict[str, dict]:
    """Per row: its img/s as a ratio to the reference measured in the same round, pooled over every round of every
    throughput file (each ratio is side by side; separate files on a shared machine differ by up to ~8 % for one
    row), and img/s = the reference's mean img/s × that ratio. A row never measured beside the reference keeps
    its mean img/s and no ratio."""
    rounds = []
    for f in sorted((root / "throughput").glob("*.json")):
        for rnd in json.loads(f.read_text())["rounds"]:  # an evaluation variant trains at its row's speed
            rounds.append({**rnd, **{v: rnd[row.trains_as] for v, row in ROWS.items() if row.trains_as in rnd}})
    if not rounds:
        return {}
    reference = [rnd[REFERENCE_ROW] for rnd in rounds if REFERENCE_ROW in rnd]
    out = {}
    for name in {name for rnd in rounds for name in rnd}:
        values = [rnd[name] for rnd in rounds if name in rnd]
        ratios = [rnd[name] / rnd[REFERENCE_ROW] for rnd in rounds if name in rnd and REFERENCE_ROW in rnd]
        img_per_s = float(np.mean(reference) * np.mean(ratios)) if ratios else float(np.mean(values))
        out[name] = {"img_per_s": img_per_s, "rounds": values, "ratio": float(np.mean(ratios)) if ratios else None,
                     "ratio_sd": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None}
    return out


def curve(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """(kimg (K,), ln FD (K,)) of one run."""
    return np.array([p["kimg"] for p in run["points"]]), np.log([p["fd"] for p in run["points"]])


def mean_over(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the piecewise-linear y(x) over [lo, hi] (area / width)."""
    grid = np.linspace(lo, hi, 401)
    return float(np.trapezoid(np.interp(grid, xs, ys), grid) / (hi - lo))


def area_over_images(run: dict) -> float:
    kimg, ln_fd = curve(run)
    return mean_over(kimg, ln_fd, kimg[0], kimg[-1])


def area_over_first_points(run: dict, points: int) -> float:
    """Mean ln FD over the first `points` grid points: the area a run stopped at that point would give."""
    kimg, ln_fd = curve(run)
    return mean_over(kimg[:points], ln_fd[:points], kimg[0], kimg[points - 1])


MOST_SEEDS = 200  # the power-by-budget table's cap on seeds needed ("> 199")


def power_by_budget(by_row: dict, a: str, b: str, most_seeds: int = MOST_SEEDS) -> list[dict]:
    """The paired comparison a − b of the ln-FD area over images, had the budget ended at each grid point from the
    second on. Nothing in training depends on total_kimg, so the first k points of a run are exactly a shorter
    run's. Per budget: mean and sd of the paired difference, seeds for a 5 % difference and for the one observed
    there (at most `most_seeds`). Seeds × CPU-minutes per run at each budget says whether a longer budget or
    more seeds buys power more cheaply."""
    seeds = sorted(set(by_row[a]) & set(by_row[b]))
    if len(seeds) < 3:
        return []
    kimg = curve(by_row[a][seeds[0]])[0]
    out = []
    for k in range(2, len(kimg) + 1):
        diffs = np.array([area_over_first_points(by_row[a][s], k) - area_over_first_points(by_row[b][s], k)
                          for s in seeds])  # (S,)
        sd = float(diffs.std(ddof=1))
        out.append({"kimg": float(kimg[k - 1]), "mean": float(diffs.mean()), "sd": sd,
                    "seeds_for_5pct": seeds_needed(sd, np.log(1.05), most=most_seeds),
                    "seeds_for_observed": seeds_needed(sd, abs(float(diffs.mean())), most=most_seeds)})
    return out


def area_over_minutes(run: dict, img_per_s: float, window: tuple[float, float]) -> float:
    kimg, ln_fd = curve(run)
    return mean_over(kimg * 1000 / img_per_s / 60, ln_fd, *window)


def shared_window(runs_a: dict, speed_a: float, runs_b: dict, speed_b: float) -> tuple[float, float] | None:
    """The wall-clock interval where both rows have evaluation points: [later first point, earlier last point]."""
    def span(runs, speed):
        kimg = curve(next(iter(runs.values())))[0]
        return kimg[0] * 1000 / speed / 60, kimg[-1] * 1000 / speed / 60

    (a0, a1), (b0, b1) = span(runs_a, speed_a), span(runs_b, speed_b)
    lo, hi = max(a0, b0), min(a1, b1)
    return (lo, hi) if hi > lo else None


def minutes_to_reach(run: dict, img_per_s: float, target_fd: float) -> float | None:
    """First training minute at which the piecewise-linear FD curve reaches target_fd (None: never)."""
    kimg = np.array([p["kimg"] for p in run["points"]])
    fd = np.array([p["fd"] for p in run["points"]])
    for i in range(len(fd)):
        if fd[i] <= target_fd:
            if i == 0:
                return float(kimg[0] * 1000 / img_per_s / 60)
            frac = (fd[i - 1] - target_fd) / (fd[i - 1] - fd[i])
            return float((kimg[i - 1] + frac * (kimg[i] - kimg[i - 1])) * 1000 / img_per_s / 60)
    return None


def endpoints(by_row: dict, speed: dict, a: str, b: str) -> dict[str, dict[str, dict[int, float]]]:
    """Per-seed endpoints of rows a and b over the wall-clock window they share (primary) and the rest."""
    window = shared_window(by_row[a], speed[a]["img_per_s"], by_row[b], speed[b]["img_per_s"]) \
        if a in speed and b in speed else None
    out = {}
    for name in (a, b):
        runs = by_row[name]
        out[name] = {
            "ln_fd_area_minutes": {s: area_over_minutes(r, speed[name]["img_per_s"], window)
                                   for s, r in runs.items()} if window else {},
            "ln_fd_area_kimg": {s: area_over_images(r) for s, r in runs.items()},
            "final_fd": {s: r["points"][-1]["fd"] for s, r in runs.items()},
            "final_class_accuracy": {s: r["points"][-1]["class_accuracy"] for s, r in runs.items()}}
    return out


def compare(by_row: dict, speed: dict, row: str, ref: str) -> dict:
    ends = endpoints(by_row, speed, row, ref)
    return {key: paired_comparison(ends[row][key], ends[ref][key]) for key in ends[row] if ends[row][key]}


def reach_minutes(by_row: dict, speed: dict, row: str) -> dict[int, float | None]:
    """Per seed: minutes the row needs to reach the DiT + EDM final FD of the same seed."""
    if TARGET_ROW not in by_row or row not in speed:
        return {}
    return {s: minutes_to_reach(r, speed[row]["img_per_s"], by_row[TARGET_ROW][s]["points"][-1]["fd"])
            for s, r in by_row[row].items() if s in by_row[TARGET_ROW]}


def fmt_ci(c: dict | None, digits: int = 3) -> str:
    """mean [bootstrap] (t: [t interval]), Wilcoxon p, P(better); the mean in bold when `resolved`."""
    if c is None:
        return "—"
    (lo, hi), (t_lo, t_hi) = c["ci95"], c["t_ci95"]
    p = f"{c['wilcoxon_p']:.2f}" if c["wilcoxon_p"] is not None else "—"
    ci = (f" [{lo:+.{digits}f}, {hi:+.{digits}f}] (t: [{t_lo:+.{digits}f}, {t_hi:+.{digits}f}])"
          if np.isfinite(lo) else "")
    mean = f"{c['mean']:+.{digits}f}"
    return f"{f'**{mean}**' if resolved(c) else mean}{ci}, p {p}, P(better) {c['p_improvement']:.2f}"


def mean_ci(values: list[float], digits: int = 3) -> str:
    """Mean over seeds with its bootstrap 95 % interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    lo, hi = bootstrap_ci(v)
    return f"{v.mean():.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def build_summary(root: Path) -> dict:
    by_row, speed = load_runs(root), load_throughput(root)
    rows = [name for name in ROWS if name in by_row]
    summary = {"rows": {}, "comparisons": {}, "power": {}, "power_by_budget": {}}
    for name in rows:
        runs = by_row[name]
        reach = reach_minutes(by_row, speed, name)
        primary = endpoints(by_row, speed, name, REFERENCE_ROW)[name]["ln_fd_area_minutes"] \
            if REFERENCE_ROW in by_row else {}
        summary["rows"][name] = {
            "label": ROWS[name].label, "seeds": sorted(runs), "img_per_s": speed.get(name, {}).get("img_per_s"),
            "throughput_ratio": speed.get(name, {}).get("ratio"),
            "throughput_ratio_sd": speed.get(name, {}).get("ratio_sd"),
            "throughput_rounds": len(speed.get(name, {}).get("rounds", [])),
            "ln_fd_area_minutes": list(primary.values()),
            "ln_fd_area_kimg": [area_over_images(r) for r in runs.values()],
            "final_fd": [r["points"][-1]["fd"] for r in runs.values()],
            "final_class_accuracy": [r["points"][-1]["class_accuracy"] for r in runs.values()],
            "minutes_to_dit_final": reach,
            "curve_kimg": curve(next(iter(runs.values())))[0].tolist(),
            "curve_fd": [[p["fd"] for p in r["points"]] for r in runs.values()]}
    pairs = [(name, REFERENCE_ROW) for name in rows if name != REFERENCE_ROW and REFERENCE_ROW in by_row]
    pairs += [(a, f) for a in ADAPTIVE_ROWS for f in FIXED_MASKDIT_ROWS
              if a in by_row and f in by_row and f != REFERENCE_ROW]
    pairs += [(a, b) for a, b in SEED_CLAIMS if a in by_row and b in by_row]
    for a, b in pairs:
        summary["comparisons"][f"{a} vs {b}"] = compare(by_row, speed, a, b)
        budgets = power_by_budget(by_row, a, b) if b == REFERENCE_ROW or (a, b) in SEED_CLAIMS else []
        if budgets:
            summary["power_by_budget"][f"{a} vs {b}"] = budgets
    for key, comp in summary["comparisons"].items():
        c = comp.get("ln_fd_area_minutes") or comp.get("ln_fd_area_kimg")
        if c is not None and len(c["seeds"]) > 1:
            # 5 % lower FD throughout = ln(1.05) lower mean ln FD
            summary["power"][key] = {"sd_diff": c["sd"], "seeds_for_5pct": seeds_needed(c["sd"], np.log(1.05)),
                                     "seeds_for_10pct": seeds_needed(c["sd"], np.log(1.10))}
    return summary


def speed_cell(r: dict) -> str:
    if not r["img_per_s"]:
        return "not measured"
    if r["throughput_ratio"] is None:
        return f"{r['img_per_s']:.1f}"
    sd = f" ± {r['throughput_ratio_sd']:.2f}" if r["throughput_ratio_sd"] is not None else ""
    return f"{r['img_per_s']:.1f} ({r['throughput_ratio']:.2f}×{sd}, n {r['throughput_rounds']})"


def markdown(summary: dict, proto_tag: str) -> str:
    lines = [f"Protocol `{proto_tag}`. ln-FD areas: mean of ln FD_fmnist over the wall-clock window shared with "
             f"{ROWS[REFERENCE_ROW].label} (primary) and over the image grid; values are means over seeds with "
             "bootstrap 95 % intervals; lower is better. img/s: the ratio to the reference measured in the same "
             "round, pooled over every round of every throughput file (± its sd over rounds, n rounds), times the "
             "reference's mean img/s.", "",
             "| row | seeds | img/s (ratio) | ln-FD area, wall-clock | ln-FD area, images | final FD | final class acc "
             "| min to DiT final FD |", "|---|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        speed = speed_cell(r)
        reach = [v for v in r["minutes_to_dit_final"].values()]
        reached = [v for v in reach if v is not None]
        reach_txt = (f"{np.mean(reached):.2f} ({len(reached)}/{len(reach)} reached)" if reached
                     else (f"not reached (0/{len(reach)})" if reach else "—"))
        lines.append("| " + " | ".join([
            r["label"], ",".join(map(str, r["seeds"])), speed,
            mean_ci(r["ln_fd_area_minutes"]) if r["ln_fd_area_minutes"] else "—", mean_ci(r["ln_fd_area_kimg"]),
            mean_ci(r["final_fd"], 1), mean_ci(r["final_class_accuracy"]), reach_txt]) + " |")
    lines += ["", "Paired differences (row − other, per seed; negative = row better): mean [95 % bootstrap] "
              "(t: [95 % Student-t]), Wilcoxon p, probability of improvement. A mean in bold is a result: ≥ 8 "
              "seeds and both intervals exclude zero.", "",
              "| comparison | seeds | Δ ln-FD area, wall-clock | Δ ln-FD area, images | Δ final FD | seeds for 5 % / 10 % |",
              "|---|---|---|---|---|---|"]
    for key, comp in summary["comparisons"].items():
        a, b = key.split(" vs ")
        first = next(iter(comp.values()))
        power = summary["power"].get(key)
        lines.append("| " + " | ".join([
            f"{ROWS[a].label} vs {ROWS[b].label}", str(len(first["seeds"])), fmt_ci(comp.get("ln_fd_area_minutes")),
            fmt_ci(comp.get("ln_fd_area_kimg")), fmt_ci(comp.get("final_fd"), 1),
            f"{power['seeds_for_5pct']} / {power['seeds_for_10pct']}" if power else "—"]) + " |")
    return "\n".join(lines + budget_lines(summary)) + "\n"


def budget_lines(summary: dict) -> list[str]:
    """The power-by-budget table: one line per comparison with ≥ 3 seeds, one column per budget."""
    budgets = summary["power_by_budget"]
    if not budgets:
        return []
    kimgs = [b["kimg"] for b in next(iter(budgets.values()))]
    lines = ["", "Power by budget: the paired ln-FD area over images had the runs stopped at each grid point "
             "(kimg). Each cell: mean Δ, paired sd → seeds for a 5 % difference / for the Δ observed there "
             "(\">\" at the cap).", "",
             "| comparison | " + " | ".join(f"{k:g}" for k in kimgs) + " |", "|---|" + "---|" * len(kimgs)]
    for key, rows in budgets.items():
        a, b = key.split(" vs ")
        cells = [f"{r['mean']:+.3f}, {r['sd']:.3f} → {cap(r['seeds_for_5pct'])} / {cap(r['seeds_for_observed'])}"
                 for r in rows]
        lines.append(f"| {ROWS[a].label} vs {ROWS[b].label} | " + " | ".join(cells) + " |")
    return lines


def cap(seeds: int, most: int = MOST_SEEDS) -> str:
    return f">{most - 1}" if seeds >= most else str(seeds)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for name, r in summary["rows"].items():
        kimg, fds = np.array(r["curve_kimg"]), np.log(np.array(r["curve_fd"]))  # (K,), (S, K)
        mean = fds.mean(0)
        half = 1.96 * fds.std(0, ddof=1) / np.sqrt(len(fds)) if len(fds) > 1 else np.zeros_like(mean)
        # (axis, x values): wall-clock on the left (only with a measured img/s), images in the middle
        panels = ([(axes[0], kimg * 1000 / r["img_per_s"] / 60)] if r["img_per_s"] else []) + [(axes[1], kimg)]
        for ax, xs in panels:
            ax.plot(xs, np.exp(mean), marker="o", ms=3, label=f"{r['label']} (n={len(fds)})")
            ax.fill_between(xs, np.exp(mean - half), np.exp(mean + half), alpha=0.15)
    axes[0].set_xlabel("training wall-clock (min, from measured img/s)")
    axes[1].set_xlabel("training images (kimg)")
    for ax in axes[:2]:
        ax.set_ylabel("FD_fmnist (lower is better)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6)
    names = [k for k in summary["comparisons"] if k.endswith(f"vs {REFERENCE_ROW}")]
    for i, key in enumerate(names):
        comp = summary["comparisons"][key]
        c = comp.get("ln_fd_area_minutes") or comp.get("ln_fd_area_kimg")
        axes[2].scatter(c["diffs"], [i] * len(c["diffs"]), s=12, color="gray")
        if np.isfinite(c["ci95"][0]):
            axes[2].plot(c["ci95"], [i, i], color="C0", lw=3)
        axes[2].plot([c["mean"]], [i], "kd")
    axes[2].axvline(0, color="k", lw=0.8)
    axes[2].set_yticks(range(len(names)), [ROWS[k.split(" vs ")[0]].label for k in names], fontsize=6)
    axes[2].set_xlabel(f"Δ mean ln FD vs {ROWS[REFERENCE_ROW].label} (per seed, 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_command(args) -> None:
    proto = protocol_from(args)
    root = REPO / args.results / proto.tag()
    summary = build_summary(root)
    if not summary["rows"]:
        sys.exit(f"error: no finished runs under {root / 'runs'}")
    table = markdown(summary, proto.tag())
    (root / "table.md").write_text(table)
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, root / "quality.png")
    if args.readme:
        readme = REPO / args.readme
        text = readme.read_text()
        pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
        if not pattern.search(text):
            sys.exit(f"error: {readme} has no {README_BEGIN} ... {README_END} section to replace")
        readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{table}{README_END}", text))
    print(table)


# ----------------------------------------------------------------------------


def protocol_from(args) -> Protocol:
    return Protocol(args.config, args.kimg, args.points, args.num_samples, args.num_steps, args.eval_config,
                    args.threads)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "throughput", "report"])
    defaults = Protocol()
    p.add_argument("--config", default=defaults.config)
    p.add_argument("--kimg", type=float, default=defaults.kimg, help="training images per run")
    p.add_argument("--points", type=int, default=defaults.points, help="evaluation points, evenly spaced in kimg")
    p.add_argument("--num-samples", type=int, default=defaults.num_samples, help="samples per evaluation point")
    p.add_argument("--num-steps", type=int, default=defaults.num_steps, help="Heun steps of the evaluation sampler")
    p.add_argument("--eval-config", default=defaults.eval_config)
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="CPU threads per training run (part of the protocol: it fixes the float reduction order)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds")
    p.add_argument("--steps", type=int, default=24, help="throughput: timed optimizer steps per row and round")
    p.add_argument("--throughput-threads", type=int, default=os.cpu_count(),
                   help="throughput: CPU threads per run (default: all cores, as a user trains)")
    p.add_argument("--reference", default="fashion_mnist:test", help="eval_latent.py source of the reference set")
    p.add_argument("--results", default="docs/benchmarks/ttq", help="committed results root")
    p.add_argument("--work", default="results/ttq-work", help="checkpoints and snapshots (not committed)")
    p.add_argument("--extend-from", default=None, metavar="PROTOCOL_TAG",
                   help="run: start each new run from the same row and seed of this shorter protocol (its checkpoint "
                        "and the snapshots on this grid), training only the extra images")
    p.add_argument("--readme", default=None, help="report: also replace the table section of this README")
    p.add_argument("overrides", nargs="*", help="train config overrides for every row (key=value)")
    args = p.parse_intermixed_args(argv)  # key=value overrides may follow any option
    if args.points < 2 or args.kimg <= 0:
        p.error("--points must be ≥ 2 and --kimg positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    {"run": run_command, "throughput": throughput_command, "report": report_command}[args.command](args)


if __name__ == "__main__":
    main()
