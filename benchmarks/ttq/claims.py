"""The early phase's calls, decided again at the horizon (issue #31, part 5).

For every comparison the early-phase protocol decided (≥ 8 paired seeds), and each of its endpoints, this says
what the early phase called it (better, worse or a tie, by the README's rule: ≥ 8 seeds and both the bootstrap
and the t interval excluding zero) and what the horizon protocol calls the same comparison: the call *holds*,
*reverses*, *vanishes* (a result becomes a tie), *appears* (a tie becomes a result), is still *open* (fewer than
8 seeds at the horizon; the direction so far is shown) or the rows have *not run* there yet. Both protocols'
summaries are rebuilt from their committed run and throughput files, like `report`.

  python -m benchmarks.ttq claims --readme docs/benchmarks/ttq/README.md   # the page's ttq-claims section
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.markdown import markers, replace_sections, table
from benchmarks.stats import LEAST_SEEDS, resolved
from benchmarks.ttq.report import build_summary
from benchmarks.ttq.rows import REFERENCE_ROW, ROWS

EARLY = "fashion-mnist-6.144kimg-6pts-n150-heun8-t1"
HORIZON = "fashion-mnist-readme-v2-112kimg-8pts-geo-n500-heun40-churn20-t1"
SECTION = markers("ttq-claims")


@dataclass(frozen=True)
class Endpoint:
    label: str
    lower_is_better: bool  # ln-FD areas and FD: lower is better; ln speed-ups: higher is better
    digits: int = 3  # of a mean difference
    speedup: bool = False  # the statistic is a ln speed-up, shown as a factor


ENDPOINTS = {
    "ln_fd_area_minutes": Endpoint("ln-FD area, wall-clock", True),
    "ln_fd_area_kimg": Endpoint("ln-FD area, images", True),
    "final_fd": Endpoint("final FD", True, digits=1),
    "speedup_wallclock": Endpoint("speed-up to the other's final FD, wall-clock", False, speedup=True),
    "speedup_images": Endpoint("speed-up to the other's final FD, images", False, speedup=True),
}


def endpoint_stats(summary: dict, key: str) -> dict[str, dict | None]:
    """One comparison's paired statistics per endpoint (None where the summary has none). The speed-ups exist
    against the reference row (`speedups`) and for the seeds' own claims (`paper_speedups`, images only)."""
    comparison = summary["comparisons"].get(key, {})
    a, b = key.split(" vs ")
    to_reference = summary["speedups"].get(a, {}) if b == REFERENCE_ROW else {}
    paper = summary["paper_speedups"].get(key, {})
    return {"ln_fd_area_minutes": comparison.get("ln_fd_area_minutes"),
            "ln_fd_area_kimg": comparison.get("ln_fd_area_kimg"),
            "final_fd": comparison.get("final_fd"),
            "speedup_wallclock": to_reference.get("wallclock", {}).get("ln_speedup"),
            "speedup_images": to_reference.get("images", {}).get("ln_speedup") or paper.get("ln_speedup")}


def leaning(c: dict, endpoint: Endpoint) -> str:
    """The direction of a mean difference: better or worse for the row."""
    return "better" if (c["mean"] < 0) == endpoint.lower_is_better else "worse"


def call(c: dict, endpoint: Endpoint) -> str:
    """better / worse (a result by the README's rule) or tie, for a comparison with ≥ LEAST_SEEDS seeds."""
    return leaning(c, endpoint) if resolved(c) else "tie"


def verdict(early: str, horizon: str) -> str:
    if early == horizon:
        return "still ties" if early == "tie" else "holds"
    if early == "tie":
        return f"appears ({horizon})"
    return "vanishes (tie)" if horizon == "tie" else f"reverses ({horizon})"


def value(c: dict, endpoint: Endpoint) -> str:
    if endpoint.speedup:
        return f"{np.exp(c['mean']):.2f}×"
    return f"{c['mean']:+.{endpoint.digits}f}"


def cell(early: dict | None, horizon: dict | None, endpoint: Endpoint, horizon_runs: bool) -> tuple[str, str]:
    """-> (the cell's text, its verdict word) for one endpoint of one comparison; ("", "") when the early phase
    did not decide this endpoint."""
    if early is None or len(early["seeds"]) < LEAST_SEEDS:
        return "", ""
    before = call(early, endpoint)
    head = f"{before} {value(early, endpoint)}"
    if horizon is None:
        status = "open" if horizon_runs else "not run"
        return f"{head} → {'no paired value yet' if horizon_runs else 'not run'}", status
    n = len(horizon["seeds"])
    if n < LEAST_SEEDS:
        seeds = "1 seed" if n == 1 else f"{n} seeds"
        return f"{head} → {value(horizon, endpoint)}: open ({seeds}, {leaning(horizon, endpoint)} so far)", "open"
    word = verdict(before, call(horizon, endpoint))
    return f"{head} → {value(horizon, endpoint)}: **{word}**", word.split(" (")[0]


def claims_rows(early: dict, horizon: dict) -> tuple[list[list[str]], dict[str, int]]:
    """One row per comparison the early phase decided on some endpoint, and the count of each verdict."""
    rows, counts = [], {}
    for key in early["comparisons"]:
        a, b = key.split(" vs ")
        before, after = endpoint_stats(early, key), endpoint_stats(horizon, key)
        horizon_runs = a in horizon["rows"] and b in horizon["rows"]
        cells = [cell(before[k], after[k], e, horizon_runs) for k, e in ENDPOINTS.items()]
        if not any(text for text, _ in cells):
            continue
        for _, word in cells:
            if word:
                counts[word] = counts.get(word, 0) + 1
        paired = set(horizon["rows"][a]["seeds"]) & set(horizon["rows"][b]["seeds"]) if horizon_runs else set()
        rows.append([f"{ROWS[a].label} vs {ROWS[b].label}", f"{len(paired)}/{LEAST_SEEDS}"]
                    + [text or "—" for text, _ in cells])
    return rows, counts


def claims_markdown(early: dict, horizon: dict, early_tag: str, horizon_tag: str) -> str:
    rows, counts = claims_rows(early, horizon)
    order = ["holds", "reverses", "vanishes", "still ties", "appears", "open", "not run"]
    tally = ", ".join(f"{counts[w]} {w}" for w in order if w in counts)
    head = (f"Every comparison the early phase (`{early_tag}`) decided with ≥ {LEAST_SEEDS} paired seeds, against "
            f"the same comparison at the horizon (`{horizon_tag}`). A cell: the early call and its mean → the "
            f"horizon's mean and verdict. better / worse: both 95 % intervals (bootstrap and t) exclude zero with "
            f"≥ {LEAST_SEEDS} seeds; tie: they do not. Means: Δ ln-FD area and Δ final FD (row − other, negative = "
            f"better), speed-ups as the geometric mean over the seeds that reached the other's final FD. Endpoints "
            f"decided: {tally}.\n\n")
    return head + table(["comparison", "paired seeds at the horizon", *[e.label for e in ENDPOINTS.values()]], rows)


def write_claims(results: Path, early_tag: str, horizon_tag: str, readmes: list[Path] = ()) -> str:
    """Rewrite the `ttq-claims` section of each of `readmes` (docs/benchmarks/ttq/README.md). -> the markdown."""
    text = claims_markdown(build_summary(results / early_tag), build_summary(results / horizon_tag), early_tag,
                           horizon_tag)
    for readme in readmes:
        replace_sections(readme, {SECTION: text})
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ttq claims", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/benchmarks/ttq", help="committed results root")
    p.add_argument("--early", default=EARLY, help="the early-phase protocol's folder under --results")
    p.add_argument("--horizon", default=HORIZON, help="the horizon protocol's folder under --results")
    p.add_argument("--readme", nargs="*", default=[], help="also rewrite the ttq-claims section of these files")
    args = p.parse_args(argv)
    print(write_claims(REPO / args.results, args.early, args.horizon, [REPO / r for r in args.readme]))


if __name__ == "__main__":
    main()
