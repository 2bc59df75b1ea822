"""Statistics for paired-seed comparisons of training runs (REFERENCE.md §7).

A seed fixes everything a row does not change (initialisation, data order, draws, evaluation noise), so the
unit of evidence is the per-seed difference d_k = row_k − ref_k. We report its mean, a percentile bootstrap
95 % interval and a Student-t 95 % interval, a Wilcoxon signed-rank p and the probability of improvement, and
size the number of seeds with the paired t-test power calculation.
"""

import math

import numpy as np
from scipy import stats


def bootstrap_ci(diffs: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (seeds resampled with replacement)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def wilcoxon_p(diffs: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p (exact for small n); None when it is undefined (n < 2, all zero)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 2 or np.all(diffs == 0):
        return None
    return float(stats.wilcoxon(diffs, alternative="two-sided").pvalue)


def t_interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `diffs`: mean ± t_{n−1} · sd / √n. Wider than the percentile bootstrap
    at small n (the bootstrap under-covers there), so a claim needs both to exclude zero."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 2:
        return (float("nan"), float("nan"))
    half = stats.t.ppf((1 + level) / 2, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean() - half), float(diffs.mean() + half)


def probability_of_improvement(diffs: np.ndarray) -> float:
    """Share of seeds where the row is better (lower is better: d < 0), ties counted half."""
    diffs = np.asarray(diffs, dtype=np.float64)
    return float(np.mean(diffs < 0) + 0.5 * np.mean(diffs == 0))


def paired_t_power(n: int, sd_diff: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n seeds when the true mean difference is `effect`
    (noncentral t with n − 1 degrees of freedom and noncentrality effect/sd·√n)."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = effect / sd_diff * math.sqrt(n)
    return float(1 - stats.nct.cdf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc))


def seeds_needed(sd_diff: float, effect: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """Smallest number of seeds n ≥ 2 at which a two-sided paired t-test at level α detects a true mean difference
    `effect` with probability ≥ `power`. REFERENCE.md §7: ~10 seeds for effect = 1 sd, ~34 for half of one."""
    if sd_diff <= 0:
        return 2
    n = 2
    while n < most and paired_t_power(n, sd_diff, effect, alpha) < power:
        n += 1
    return n


def paired_comparison(row: dict[int, float], ref: dict[int, float]) -> dict | None:
    """row, ref: {seed: endpoint}. -> the statistics of row − ref over their common seeds (None if none)."""
    seeds = sorted(set(row) & set(ref))
    if not seeds:
        return None
    diffs = np.array([row[s] - ref[s] for s in seeds])
    lo, hi = bootstrap_ci(diffs)
    return {"seeds": seeds, "diffs": diffs.tolist(), "mean": float(diffs.mean()),
            "sd": float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan"), "ci95": [lo, hi],
            "t_ci95": list(t_interval(diffs)),
            "wilcoxon_p": wilcoxon_p(diffs), "p_improvement": probability_of_improvement(diffs)}


LEAST_SEEDS = 8  # the fewest paired seeds a result may rest on (issue #12)


def resolved(c: dict | None, least_seeds: int = LEAST_SEEDS) -> bool:
    """The README's rule for calling a paired difference a result: at least `least_seeds` seeds (issue #12), and
    both the bootstrap and the t interval exclude zero on the same side."""
    if c is None or len(c["seeds"]) < least_seeds:
        return False
    bounds = np.array(c["ci95"] + c["t_ci95"])
    return bool(np.all(bounds < 0) or np.all(bounds > 0))
