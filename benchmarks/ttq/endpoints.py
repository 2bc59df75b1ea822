"""The time-to-quality endpoints of finished runs (README "Time-to-quality"; REFERENCE.md §7): the wall-clock
speed-up to the reference row's final FD, the mean of ln FD over the wall-clock window two rows share, over the
image grid, the final FD and class accuracy, the minutes to reach the DiT + EDM row's final FD, and the power each
comparison would have at a shorter budget.

A run here is its committed JSON: {"row", "seed", "protocol", "points": [{"kimg", "fd", "class_accuracy"}, ...]}.
On a geometric grid (protocol "spacing") a curve lives on log axes: areas are means over ln kimg (ln minutes), so
each doubling of training counts alike, and a curve between two points is linear in ln kimg.
"""

import numpy as np

from benchmarks.stats import paired_comparison, seeds_needed
from benchmarks.ttq.rows import TARGET_ROW


def curve(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """(kimg (K,), ln FD (K,)) of one run."""
    return np.array([p["kimg"] for p in run["points"]]), np.log([p["fd"] for p in run["points"]])


def log_axis(run: dict) -> bool:
    """True for a run on a geometric grid (protocols before the option have even ones)."""
    return run.get("protocol", {}).get("spacing", "even") == "geometric"


def mean_over(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float, log_x: bool = False) -> float:
    """Mean of the piecewise-linear y(x) over [lo, hi] (area / width); with log_x, of y(ln x) over [ln lo, ln hi]."""
    if log_x:
        xs, lo, hi = np.log(xs), np.log(lo), np.log(hi)
    grid = np.linspace(lo, hi, 401)
    return float(np.trapezoid(np.interp(grid, xs, ys), grid) / (hi - lo))


def area_over_images(run: dict) -> float:
    kimg, ln_fd = curve(run)
    return mean_over(kimg, ln_fd, kimg[0], kimg[-1], log_axis(run))


def area_over_first_points(run: dict, points: int) -> float:
    """Mean ln FD over the first `points` grid points: the area a run stopped at that point would give."""
    kimg, ln_fd = curve(run)
    return mean_over(kimg[:points], ln_fd[:points], kimg[0], kimg[points - 1], log_axis(run))


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
    return mean_over(kimg * 1000 / img_per_s / 60, ln_fd, *window, log_axis(run))


def shared_window(runs_a: dict, speed_a: float, runs_b: dict, speed_b: float) -> tuple[float, float] | None:
    """The wall-clock interval where both rows have evaluation points: [later first point, earlier last point]."""
    def span(runs, speed):
        kimg = curve(next(iter(runs.values())))[0]
        return kimg[0] * 1000 / speed / 60, kimg[-1] * 1000 / speed / 60

    (a0, a1), (b0, b1) = span(runs_a, speed_a), span(runs_b, speed_b)
    lo, hi = max(a0, b0), min(a1, b1)
    return (lo, hi) if hi > lo else None


def kimg_to_reach(run: dict, target_fd: float) -> float | None:
    """First kimg at which the piecewise-linear FD curve reaches target_fd (None: never); on a geometric grid the
    curve is piecewise linear in (ln kimg, ln FD)."""
    kimg = np.array([p["kimg"] for p in run["points"]])
    fd = np.array([p["fd"] for p in run["points"]])
    log = log_axis(run)
    x, y, target = (np.log(kimg), np.log(fd), np.log(target_fd)) if log else (kimg, fd, target_fd)
    for i in range(len(y)):
        if y[i] <= target:
            if i == 0:
                return float(kimg[0])
            frac = (y[i - 1] - target) / (y[i - 1] - y[i])
            reached = x[i - 1] + frac * (x[i] - x[i - 1])
            return float(np.exp(reached) if log else reached)
    return None


def minutes_to_reach(run: dict, img_per_s: float, target_fd: float) -> float | None:
    """First training minute at which the piecewise-linear FD curve reaches target_fd (None: never)."""
    kimg = kimg_to_reach(run, target_fd)
    return None if kimg is None else kimg * 1000 / img_per_s / 60


def speedup_to_baseline_final(by_row: dict, row: str, baseline: str, ln_speed_ratio: float = 0.0) -> dict:
    """The speed-up as SpeeD, Min-SNR-γ and TREAD define theirs: training the baseline needs to reach its final FD
    over what the row needs to reach the same FD, per seed, in images (the papers count iterations at equal
    batch), or in wall-clock with ln_speed_ratio = ln(row img/s / baseline img/s) measured side by side (time =
    images / img/s, so the wall-clock factor is the image factor × the img/s ratio). Its log is the paired
    difference ln kimg_baseline − ln kimg_row, so the statistics are paired_comparison's over the seeds where the
    row got there. A seed where it did not has a speed-up below what the budget can show, so it is kept as
    censored: it counts as the lowest value in the median over all seeds (None when half or more did not get
    there) and is left out of the mean."""
    ln_kimg = {baseline: {}, row: {}}
    not_reached = []
    for s in sorted(set(by_row[row]) & set(by_row[baseline])):
        target = by_row[baseline][s]["points"][-1]["fd"]
        reached = kimg_to_reach(by_row[row][s], target)
        if reached is None:
            not_reached.append(s)
            continue
        ln_kimg[row][s] = float(np.log(reached)) - ln_speed_ratio
        ln_kimg[baseline][s] = float(np.log(kimg_to_reach(by_row[baseline][s], target)))
    ln_speedups = sorted(ln_kimg[baseline][s] - ln_kimg[row][s] for s in ln_kimg[row])
    all_seeds = [-np.inf] * len(not_reached) + ln_speedups  # ascending, censored seeds lowest
    median = float(np.exp(np.median(all_seeds))) if all_seeds else None
    return {"ln_speedup": paired_comparison(ln_kimg[baseline], ln_kimg[row]), "not_reached": not_reached,
            "median_speedup": median if median else None}


def wallclock_speedup(by_row: dict, speed: dict, row: str, baseline: str) -> dict | None:
    """speedup_to_baseline_final in wall-clock, from the side-by-side img/s of both rows (None: not measured)."""
    if row not in speed or baseline not in speed:
        return None
    ratio = speed[row]["img_per_s"] / speed[baseline]["img_per_s"]
    return {"img_per_s_ratio": ratio, **speedup_to_baseline_final(by_row, row, baseline, float(np.log(ratio)))}


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
