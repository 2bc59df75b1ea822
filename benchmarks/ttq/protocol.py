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
  of the same seed, the final class accuracy (endpoints.py). Statistics: paired differences per seed, their
  mean with a bootstrap and a Student-t 95 % interval, Wilcoxon p, probability of improvement (benchmarks/stats.py).
- Results live in the repo: each finished run writes a small JSON under docs/benchmarks/ttq/<protocol>/runs/,
  throughput rounds under .../throughput/; `report` regenerates the table, the plot and the README section
  from those files alone (report.py), so later work adds seeds instead of re-running. The rows: rows.py.

  python -m benchmarks.ttq run --seeds 0 1 2 --rows maskdit_edm dit_edm maskdit_excess
  python -m benchmarks.ttq throughput --rounds 3
  python -m benchmarks.ttq report

Re-running `run` skips finished runs (their JSON exists); a run stopped during training resumes from its
checkpoint, one stopped during evaluation scores only the points it had not scored. Several `run` processes given
the same arguments share the runs out (a lock file per run), e.g. two single-threaded ones on two cores. Working
files (checkpoints, snapshots, scores so far) go to --work (default results/ttq-work) under the protocol's training
part (Protocol.work_tag), which is not committed.

The horizon protocol (issue #31: README command 1's recipe and budget, 8 geometric points, the default's sampler):

  python -m benchmarks.ttq run --recipe readme-v2 --kimg 112 --points 8 --spacing geometric --num-samples 500 --num-steps 40 --s-churn 20 --seeds 0 1 --rows maskdit_edm maskdit_min_snr
"""

import argparse
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import REPO
from benchmarks.commands import machine, python
from benchmarks.ttq.report import write_report
from benchmarks.fmnist_recipes import RECIPES, recipe_batch_size
from benchmarks.ttq.rows import ROWS, Row
from utils.atomic import atomic_write_text

# A geometric grid's first point is the budget / GEOMETRIC_SPAN: 112 kimg → 3.5, 5.7, 9.4, 15, 25, 42, 68, 112
GEOMETRIC_SPAN = 32


@dataclass
class Protocol:
    """What makes runs comparable: same config and recipe, image budget, grid, sampler and n."""

    config: str = "configs/train/fashion-mnist.yaml"
    kimg: float = 6.144
    points: int = 6
    num_samples: int = 150
    num_steps: int = 8
    eval_config: str = "configs/test/fashion-mnist.yaml"
    threads: int = 1
    ema: str = "classic"  # which EMA is scored: the classic one training tracks, or a post-hoc EMA σ_rel ("0.1")
    recipe: str = "readme-v1"  # benchmarks/fmnist_recipes.py: the pinned recipe every row trains on
    spacing: str = "even"  # grid: even | geometric (from kimg / GEOMETRIC_SPAN to kimg)
    s_churn: float = 0.0  # the evaluation sampler's S_churn (0: deterministic Heun)

    def tag(self) -> str:
        """Names the results folder: the training part, then the evaluation's n and sampler (protocols from
        before the recipe, spacing and churn options keep their names)."""
        churn = f"-churn{self.s_churn:g}" if self.s_churn else ""
        ema = "" if self.ema == "classic" else f"-ema{float(self.ema):g}"
        return (f"{self.trained_grid()}-n{self.num_samples}-heun{self.num_steps}{churn}-t{self.threads}{ema}")

    def work_tag(self) -> str:
        """Names the working folder: only what training depends on, so one set of runs can be scored under several
        evaluations (n, sampler) without training again."""
        tracking = "" if self.ema == "classic" else "-posthoc"
        return f"{self.trained_grid()}-t{self.threads}{tracking}"

    def trained_grid(self) -> str:
        recipe = "" if self.recipe == "readme-v1" else f"-{self.recipe}"
        spacing = "" if self.spacing == "even" else f"-{self.spacing[:3]}"
        return f"{Path(self.config).stem}{recipe}-{self.kimg:g}kimg-{self.points}pts{spacing}"

    def recipe_overrides(self) -> list[str]:
        return RECIPES[self.recipe]

    def posthoc_overrides(self) -> list[str]:
        """Post-hoc EMA protocols track EDM2's two power EMAs with 4 snapshots per evaluation interval, so every
        grid point is a snapshot time and the reconstruction there is close (profile residual < 1 %)."""
        if self.ema == "classic":
            return []
        return ["train.posthoc_ema.sigma_rels=[0.05,0.1]", f"train.posthoc_ema.snapshot_kimg={self.kimg / self.points / 4}"]


# ----------------------------------------------------------------------------
# run: train on the image budget, evaluate the snapshots, write the run's JSON.


def train_run(run_dir: Path, row: Row, seed: int, proto: Protocol, overrides: list[str]) -> None:
    """train.py for proto.kimg with an EMA snapshot at each grid point and a checkpoint every kimg/points;
    re-running resumes its checkpoint."""
    every = proto.kimg / proto.points
    snapshots = [f"train.snapshot_kimg={every}"] if proto.spacing == "even" else \
        ["train.snapshot_kimg=0", f"train.snapshot_at_kimg=[{','.join(map(str, grid_kimg(proto)))}]"]
    python(["train.py", "--config", proto.config, f"run_dir={run_dir}", f"train.seed={seed}",
            f"train.total_kimg={proto.kimg}", *snapshots, "train.keep_snapshots=0",
            "train.sample_kimg=0", f"train.checkpoint_kimg={every}", "train.keep_checkpoints=1",
            f"train.log_kimg={every}", *proto.recipe_overrides(), *proto.posthoc_overrides(), *overrides,
            *row.train_overrides],
           threads=proto.threads)


def grid_kimg(proto: Protocol) -> list[float]:
    """The evaluation grid in kimg (3 decimals, as the snapshot file names): `points` evenly spaced points up to
    the budget, or geometrically spaced from kimg / GEOMETRIC_SPAN, each rounded to a whole optimizer step (the
    snapshot is written at the step that reaches it)."""
    if proto.spacing == "even":
        return [round(proto.kimg * (i + 1) / proto.points, 3) for i in range(proto.points)]
    step_kimg = recipe_batch_size(proto.recipe_overrides()) / 1000
    first = proto.kimg / GEOMETRIC_SPAN
    steps = [max(1, round(first * GEOMETRIC_SPAN ** (i / (proto.points - 1)) / step_kimg)) for i in range(proto.points)]
    if len(set(steps)) != len(steps):
        raise SystemExit(f"error: --kimg {proto.kimg:g} is too short for {proto.points} geometric points "
                         f"(two fall on the same optimizer step: {steps})")
    return [round(n * step_kimg, 3) for n in steps]


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
    if (source / "posthoc").is_dir():  # power EMA snapshots lie on the trajectory the extended run continues
        shutil.copytree(source / "posthoc", run_dir / "posthoc")
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
    """The run's EMA snapshots on the protocol's grid; one error line naming the run directory when any is missing."""
    found = sorted((run_dir / "snapshots").glob("ema-*.safetensors"))
    if len(found) != proto.points:
        raise SystemExit(f"error: {run_dir}: {len(found)} of {proto.points} evaluation snapshots were written")
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
        self.feature_net = build_feature_net(base, self.device)
        self.ref = load_reference(str(ref_path), self.feature_net)
        self.ref_pool = reference_pool_features(self.ref, self.feature_net, base, self.device)

    def __call__(self, snapshot: Path, seed: int, overrides: list[str], grid: Path | None) -> dict:
        """Scores the classic EMA snapshot, or the protocol's post-hoc EMA at that snapshot's point."""
        from diffusion.network import load_for_sampling
        from evaluation.evaluate import evaluate_network

        cfg = eval_config(self.proto, seed, overrides)
        net, meta = load_for_sampling(snapshot, self.device) if self.proto.ema == "classic" else \
            posthoc_network(snapshot.parents[1], snapshot_kimg(snapshot), float(self.proto.ema), self.device)
        return evaluate_network(net, meta, cfg, self.feature_net, self.ref, self.ref_pool, self.device, grid)


def posthoc_network(run_dir: Path, kimg: float, sigma_rel: float, device):
    """The post-hoc EMA of length σ_rel at `kimg`, reconstructed from the run's power snapshots up to there."""
    from training.posthoc_ema import EMATarget, power_snapshots, reconstruct

    snaps = power_snapshots(run_dir)
    return reconstruct(snaps, EMATarget(sigma_rel=sigma_rel), round(kimg * 1000 / snaps[0].batch_size)).network(device)


def eval_config(proto: Protocol, seed: int, overrides: list[str]):
    """The protocol's evaluation config for a seed: its sampler, n and seeds, then the row's overrides. Evaluation
    seeds depend on the run's seed only: the same noise and classes for every row of a seed."""
    from evaluation.config import load_eval_config

    return load_eval_config(proto.eval_config, [
        f"num_samples={proto.num_samples}", f"sampling.num_steps={proto.num_steps}", "sampling.sampler=edm",
        f"sampling.s_churn={proto.s_churn:g}", f"seed_start={seed * 1_000_000}", *overrides])  # whatever the config


def evaluate_run(run_dir: Path, name: str, seed: int, evaluator: Evaluator, proto: Protocol) -> dict:
    """Scores every grid snapshot. Each point's scores are appended to a file in the run directory as they come,
    so a run stopped during evaluation re-scores only the points it had not finished (a seeded evaluation is
    deterministic: a kept score is the one it would recompute)."""
    scored_file = run_dir / f"scores-{proto.tag()}-{name}.jsonl"
    scored = read_scores(scored_file)
    points = []
    found = snapshots(run_dir, proto)
    for i, path in enumerate(found):
        kimg = snapshot_kimg(path)
        if kimg not in scored:
            grid = run_dir / f"grid-final-{name}.png" if i == len(found) - 1 else None
            scored[kimg] = {"kimg": kimg, **evaluator(path, seed, ROWS[name].eval_overrides, grid)}
            append_line(scored_file, json.dumps(scored[kimg]))
        points.append(scored[kimg])
        print(json.dumps({"row": name, "seed": seed, **points[-1]}), flush=True)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return {"row": name, "seed": seed, "protocol": proto.__dict__, "machine": machine(),
            "train_minutes": stats[-1]["train_min"], "points": points}


def append_line(path: Path, line: str) -> None:
    """Appends one line, first ending a line a kill cut short (so the new one is not glued to it)."""
    cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if cut else "") + line + "\n")


def read_scores(path: Path) -> dict[float, dict]:
    """The points scored so far, by kimg; a line cut short by a kill is left out (that point is scored again)."""
    scored = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            point = json.loads(line)
        except json.JSONDecodeError:
            continue
        scored[point["kimg"]] = point
    return scored


class RunClaim:
    """A lock file beside a run directory while one `run` process works on it, so several `run` processes given
    the same rows and seeds share them out (two single-threaded runs side by side on two cores). A lock whose
    process is gone (killed, machine restarted) is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir.with_name(run_dir.name + ".lock")
        self.held = False

    def __enter__(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if process_alive(self.path):
                    return False
                self.path.unlink(missing_ok=True)  # a dead process's lock
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            self.held = True
            return True
        return False

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def process_alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False  # unreadable or half-written: its writer died between create and write
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def run_dir_of(work: Path, name: str, seed: int) -> Path:
    """The training run a row's seed is scored on: an evaluation variant shares its row's run."""
    return work / f"{ROWS[name].trains_as or name}-seed{seed}"


def run_command(args) -> None:
    proto = protocol_from(args)
    results = REPO / args.results / proto.tag() / "runs"
    results.mkdir(parents=True, exist_ok=True)
    work = (REPO / args.work / proto.work_tag()).resolve()
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
            run_dir = run_dir_of(work, name, seed)
            with RunClaim(run_dir) as mine:
                if not mine:
                    print(f"{name} seed {seed}: another run process has it; next", flush=True)
                    continue
                evaluator = run_one(name, seed, run_dir, result_file, proto, args, evaluator, work)


def run_one(name: str, seed: int, run_dir: Path, result_file: Path, proto: Protocol, args, evaluator, work: Path):
    """Train (or resume, or extend) one row's seed, score it, write its result file. -> the evaluator, kept for
    the next run."""
    started = time.time()
    if result_file.exists():  # another process finished it while this one waited
        return evaluator
    if args.extend_from and not run_dir.exists():
        extend_run(work.parent / args.extend_from / run_dir.name, run_dir, proto)
    train_run(run_dir, ROWS[ROWS[name].trains_as or name], seed, proto, args.overrides)  # resumes; or returns
    evaluator = evaluator or Evaluator(proto, args.reference, work)
    result = evaluate_run(run_dir, name, seed, evaluator, proto)
    atomic_write_text(result_file, json.dumps(result, indent=1) + "\n")
    print(f"{name} seed {seed}: done in {(time.time() - started) / 60:.1f} min", flush=True)
    return evaluator


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
            f"train.checkpoint_kimg={kimg}", *proto.recipe_overrides(), f"train.batch_size={batch}", *overrides,
            *ROWS[name].train_overrides],
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


def report_command(args) -> None:
    root = REPO / args.results / protocol_from(args).tag()
    print(write_report(root, [REPO / path for path in args.readme], args.section))


# ----------------------------------------------------------------------------


def protocol_from(args) -> Protocol:
    proto = Protocol(args.config, args.kimg, args.points, args.num_samples, args.num_steps, args.eval_config,
                     args.threads, args.ema, args.recipe, args.spacing, args.s_churn)
    if proto.ema != "classic" and proto.spacing != "even":
        raise SystemExit("error: --ema σ_rel needs --spacing even (its power snapshots are taken on an even grid)")
    return proto


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """The options that make a Protocol (and so name its results folder)."""
    defaults = Protocol()
    p.add_argument("--config", default=defaults.config)
    p.add_argument("--kimg", type=float, default=defaults.kimg, help="training images per run")
    p.add_argument("--points", type=int, default=defaults.points, help="evaluation points (see --spacing)")
    p.add_argument("--num-samples", type=int, default=defaults.num_samples, help="samples per evaluation point")
    p.add_argument("--num-steps", type=int, default=defaults.num_steps, help="Heun steps of the evaluation sampler")
    p.add_argument("--s-churn", type=float, default=defaults.s_churn, help="S_churn of the evaluation sampler")
    p.add_argument("--recipe", default=defaults.recipe, choices=sorted(RECIPES),
                   help="the pinned recipe every row trains on (benchmarks/fmnist_recipes.py)")
    p.add_argument("--spacing", default=defaults.spacing, choices=["even", "geometric"],
                   help=f"evaluation grid: even, or geometric from kimg/{GEOMETRIC_SPAN} to kimg")
    p.add_argument("--eval-config", default=defaults.eval_config)
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="CPU threads per training run (part of the protocol: it fixes the float reduction order)")
    p.add_argument("--ema", default=defaults.ema, type=ema_choice,
                   help="EMA scored at each point: classic (what training tracks) or a post-hoc EMA σ_rel, e.g. 0.1: "
                        "the same length for every row, fixed before any result is seen")


def ema_choice(value: str) -> str:
    from models.ema_profiles import MAX_SIGMA_REL

    if value == "classic":
        return value
    try:
        ok = 0 < float(value) < MAX_SIGMA_REL
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'classic' nor a σ_rel in (0, {MAX_SIGMA_REL:.4f})")
    return value


def add_location_args(p: argparse.ArgumentParser) -> None:
    """Where the reference set, the committed results and the working files are."""
    p.add_argument("--reference", default="fashion_mnist:test", help="eval_latent.py source of the reference set")
    p.add_argument("--results", default="docs/benchmarks/ttq", help="committed results root")
    p.add_argument("--work", default="results/ttq-work", help="checkpoints and snapshots (not committed)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.ttq", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "throughput", "report"])
    add_protocol_args(p)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds")
    p.add_argument("--steps", type=int, default=24, help="throughput: timed optimizer steps per row and round")
    p.add_argument("--throughput-threads", type=int, default=os.cpu_count(),
                   help="throughput: CPU threads per run (default: all cores, as a user trains)")
    add_location_args(p)
    p.add_argument("--extend-from", default=None, metavar="WORK_TAG",
                   help="run: start each new run from the same row and seed of this shorter protocol (its checkpoint "
                        "and the snapshots on this grid), training only the extra images")
    p.add_argument("--readme", nargs="*", default=[], help="report: also replace the full-table / short-table "
                   "sections of these files (docs/benchmarks/ttq/README.md, README.md)")
    p.add_argument("--section", default="ttq", help="report: the marker name of the sections written in --readme "
                   "files (<section>-table, <section>-summary), one per protocol a page shows")
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
