"""How much of a time-to-quality comparison's seed-to-seed spread is evaluation noise?

A paired difference d_k = ln FD(row a, seed k) − ln FD(row b, seed k) varies over seeds for two reasons: the two
trainings differ (what the benchmark measures) and FD is estimated from n samples (noise that more samples would
remove). This re-scores the committed runs' EMA snapshots (in --work) under several evaluation seeds at the
protocol's n: replicate 0 is the protocol's own evaluation (it must reproduce the committed FD exactly), the
others draw other noise and classes. The sd of d over replicates at fixed snapshots is the evaluation part; the
sd of d over training seeds (from the committed runs) is the whole. If the evaluation part is most of it, a larger
n buys power more cheaply than more seeds; if not, only seeds help.

  python -m benchmarks.ttq eval-noise --rows maskdit_min_snr_importance maskdit_min_snr --seeds 0 1 --replicates 4

Writes docs/benchmarks/ttq/<protocol>/eval_noise/<stamp>.json and prints the decomposition.
"""

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.stats import paired_comparison
from benchmarks.ttq.protocol import (REPO, Evaluator, Protocol, add_location_args, add_protocol_args, protocol_from,
                                     run_dir_of, snapshots)
from benchmarks.ttq.report import load_runs
from benchmarks.ttq.rows import ROWS


def replicate_eval_seed(seed: int, replicate: int) -> int:
    """Replicate 0 is the protocol's evaluation seed (the training seed); the others are disjoint from every
    training seed below 1000."""
    return seed if replicate == 0 else 1000 + 100 * seed + replicate


def score_replicates(evaluator: Evaluator, work, name: str, seed: int, proto: Protocol, replicates: int,
                     point: int) -> list[float]:
    """ln FD of one run's snapshot at grid index `point` under each replicate's evaluation seed."""
    path = snapshots(run_dir_of(work, name, seed), proto)[point]
    return [float(np.log(evaluator(path, replicate_eval_seed(seed, r), ROWS[name].eval_overrides, None)["fd"]))
            for r in range(replicates)]


def decomposition(ln_fd: dict, committed: dict, a: str, b: str, point: int) -> dict:
    """ln_fd[name][seed]: per-replicate ln FD. -> the evaluation sd of the paired difference (pooled over seeds),
    the total sd over training seeds (committed runs, same point), and the share of variance evaluation explains."""
    seeds = sorted(ln_fd[a])
    diffs = np.array([np.subtract(ln_fd[a][s], ln_fd[b][s]) for s in seeds])  # (S, R)
    eval_var = float(np.mean(diffs.var(axis=1, ddof=1)))  # pooled within-seed variance
    ln_fd_at_point = {n: {s: float(np.log(r["points"][point]["fd"])) for s, r in committed[n].items()} for n in (a, b)}
    total = paired_comparison(ln_fd_at_point[a], ln_fd_at_point[b])  # over every committed seed pair
    total_var = total["sd"] ** 2
    per_row = {n: float(np.mean([np.std(v, ddof=1) for v in ln_fd[n].values()])) for n in (a, b)}  # unpaired
    return {"eval_sd": eval_var ** 0.5, "eval_sd_per_row": per_row, "total_sd": total_var ** 0.5,
            "total_seeds": len(total["seeds"]), "eval_share_of_variance": eval_var / total_var}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ttq eval-noise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_args(p)
    p.add_argument("--rows", nargs=2, required=True, choices=list(ROWS), metavar="ROW")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--replicates", type=int, default=4,
                   help="evaluation seeds per snapshot (the first is the protocol's)")
    p.add_argument("--point", type=int, default=-1, help="grid index of the snapshot scored (default: the last)")
    add_location_args(p)
    args = p.parse_args(argv)
    proto = protocol_from(args)
    root, work = REPO / args.results / proto.tag(), (REPO / args.work / proto.work_tag()).resolve()
    committed = load_runs(root)
    for name in args.rows:
        for s in args.seeds:
            if s not in committed.get(name, {}):
                raise SystemExit(f"error: no committed run {root / 'runs' / f'{name}-seed{s}.json'}")
            snapshots(run_dir_of(work, name, s), proto)  # exits with one line if the run's snapshots are gone
    torch.set_num_threads(proto.threads)
    evaluator = Evaluator(proto, args.reference, work)
    ln_fd = {name: {s: score_replicates(evaluator, work, name, s, proto, args.replicates, args.point)
                    for s in args.seeds} for name in args.rows}
    for name in args.rows:  # replicate 0 is the committed evaluation: same snapshot, sampler, seed, n
        for s in args.seeds:
            want = np.log(committed[name][s]["points"][args.point]["fd"])
            if abs(ln_fd[name][s][0] - want) > 1e-6:
                raise SystemExit(f"error: {name} seed {s} does not reproduce its committed FD ({ln_fd[name][s][0]:.6f} "
                                 f"vs {want:.6f}); is --work the runs' work folder?")
    result = {"protocol": proto.tag(), "rows": args.rows, "point": args.point, "replicates": args.replicates,
              "ln_fd": {n: {str(s): v for s, v in d.items()} for n, d in ln_fd.items()},
              **decomposition(ln_fd, committed, *args.rows, args.point)}
    out = root / "eval_noise"
    out.mkdir(exist_ok=True)
    (out / f"{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "ln_fd"}, indent=1))


if __name__ == "__main__":
    main()
