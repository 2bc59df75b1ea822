"""The time-to-quality report: the table, the plot and the README section, rebuilt from the committed files of
one protocol (runs/*.json and throughput/*.json under docs/benchmarks/ttq/<protocol>/) alone, so that later
work adds seeds instead of re-running."""

import json
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.markdown import markers, replace_sections
from benchmarks.stats import bootstrap_ci, resolved, seeds_needed
from benchmarks.ttq.endpoints import (MOST_SEEDS, area_over_images, compare, curve, endpoints, log_axis,
                                      power_by_budget, reach_minutes, speedup_to_baseline_final, wallclock_speedup)
from benchmarks.ttq.rows import (ADAPTIVE_ROWS, CLAIM_PAIRS, FIXED_MASKDIT_ROWS, PAPER_SPEEDUPS, PLOT_FAMILIES,
                                 REFERENCE_ROW, ROWS, SUMMARY_ROWS)

# the full table (docs/benchmarks/ttq/README.md) and the short one (the README's results at a glance)
README_BEGIN, README_END = markers("ttq-table")
SHORT_BEGIN, SHORT_END = markers("ttq-summary")


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
    summary = {"rows": {}, "speedups": {}, "comparisons": {}, "power": {}, "power_by_budget": {},
               "paper_speedups": {}}
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
            "log_axis": log_axis(next(iter(runs.values()))),
            "curve_fd": [[p["fd"] for p in r["points"]] for r in runs.values()]}
    pairs = [(name, REFERENCE_ROW) for name in rows if name != REFERENCE_ROW and REFERENCE_ROW in by_row]
    for name, _ in pairs:
        summary["speedups"][name] = {"wallclock": wallclock_speedup(by_row, speed, name, REFERENCE_ROW),
                                     "images": speedup_to_baseline_final(by_row, name, REFERENCE_ROW)}
    pairs += [(a, f) for a in ADAPTIVE_ROWS for f in FIXED_MASKDIT_ROWS
              if a in by_row and f in by_row and f != REFERENCE_ROW]
    pairs += [(a, b) for a, b in CLAIM_PAIRS if a in by_row and b in by_row]
    for a, b in pairs:
        summary["comparisons"][f"{a} vs {b}"] = compare(by_row, speed, a, b)
        budgets = power_by_budget(by_row, a, b) if b == REFERENCE_ROW or (a, b) in CLAIM_PAIRS else []
        if budgets:
            summary["power_by_budget"][f"{a} vs {b}"] = budgets
    for (a, b), claimed in PAPER_SPEEDUPS.items():
        if a in by_row and b in by_row:
            summary["paper_speedups"][f"{a} vs {b}"] = {"claimed": claimed, **speedup_to_baseline_final(by_row, a, b)}
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
    for r in summary["rows"].values():
        speed = speed_cell(r)
        reach = list(r["minutes_to_dit_final"].values())
        reached = [v for v in reach if v is not None]
        reach_txt = (f"{np.mean(reached):.2f} ({len(reached)}/{len(reach)} reached)" if reached
                     else (f"not reached (0/{len(reach)})" if reach else "—"))
        lines.append("| " + " | ".join([
            r["label"], ",".join(map(str, r["seeds"])), speed,
            mean_ci(r["ln_fd_area_minutes"]) if r["ln_fd_area_minutes"] else "—", mean_ci(r["ln_fd_area_kimg"]),
            mean_ci(r["final_fd"], 1), mean_ci(r["final_class_accuracy"]), reach_txt]) + " |")
    lines += speedup_to_reference_lines(summary)
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
    return "\n".join(lines + speedup_lines(summary) + budget_lines(summary)) + "\n"


def speedup_to_reference_lines(summary: dict) -> list[str]:
    """Every row's speed-up to the reference row's final FD, per seed (endpoints.speedup_to_baseline_final), in
    wall-clock (side-by-side img/s) and in images."""
    if not summary["speedups"]:
        return []
    ref = ROWS[REFERENCE_ROW].label
    lines = ["", f"Speed-up to {ref}'s final FD: the minutes (images) {ref} needs to reach its own final FD over "
             "those the row needs to reach the same FD, per seed. Median over all seeds (a seed that never got "
             "there counts as the lowest; \"not reached\" when half did not) and the geometric mean [95 % bootstrap] "
             "(t: [95 % Student-t]) over the seeds that got there; above 1 = faster. Wall-clock uses the side-by-side "
             "img/s ratio.", "",
             "| row | seeds reached | wall-clock: median | wall-clock: geometric mean | images: median | "
             "images: geometric mean |", "|---|---|---|---|---|---|"]
    for name, s in summary["speedups"].items():
        images, wall = s["images"], s["wallclock"]
        reached = len(images["ln_speedup"]["seeds"]) if images["ln_speedup"] else 0
        lines.append("| " + " | ".join([
            ROWS[name].label, f"{reached}/{reached + len(images['not_reached'])}",
            median_cell(wall), speedup_mean_cell(wall), median_cell(images), speedup_mean_cell(images)]) + " |")
    return lines


def median_cell(s: dict | None) -> str:
    if s is None:
        return "not measured"
    return f"{s['median_speedup']:.2f}×" if s["median_speedup"] else "not reached"


def speedup_mean_cell(s: dict | None) -> str:
    if s is None:
        return "not measured"
    c = s["ln_speedup"]
    text = "—" if c is None else geometric_mean_ci(c)
    return f"**{text}**" if resolved(c) else text


def short_markdown(summary: dict, proto_tag: str, link: str) -> str:
    """The README's table: the rows that carry the claims (ttq_rows.SUMMARY_ROWS), their paired difference to the
    reference and the papers' speed-up factor where a paper claims one; `link`: where every row and comparison is,
    relative to the page."""
    ref = ROWS[REFERENCE_ROW].label
    lines = [f"Protocol `{proto_tag}` (2-core CPU, Fashion-MNIST, paired seeds). Δ: paired difference in mean ln "
             f"FD_fmnist over the shared wall-clock window against {ref} (negative = better; mean [95 % bootstrap]; "
             f"bold when ≥ 8 seeds and both intervals exclude zero). To {ref}'s final FD: the minutes it needs to reach "
             "its own final FD over those the row needs (median over seeds; above 1 = faster). Speed-up (paper): "
             "images the baseline needs to reach its own final FD over images the row needs (median over seeds), "
             f"against the paper's claim. Every row and comparison: [{link}]({link}).", "",
             f"| row | seeds | img/s (ratio) | final FD | to {ref}'s final FD, wall-clock | Δ vs {ref} | "
             "speed-up (paper) |", "|---|---|---|---|---|---|---|"]
    for name in (n for n in SUMMARY_ROWS if n in summary["rows"]):
        r = summary["rows"][name]
        comp = summary["comparisons"].get(f"{name} vs {REFERENCE_ROW}", {})
        c = comp.get("ln_fd_area_minutes") or comp.get("ln_fd_area_kimg")
        delta = "reference" if name == REFERENCE_ROW else "—" if c is None else \
            (f"**{c['mean']:+.3f}**" if resolved(c) else f"{c['mean']:+.3f}") + \
            (f" [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if np.isfinite(c["ci95"][0]) else "")
        to_ref = "reference" if name == REFERENCE_ROW else median_cell(summary["speedups"][name]["wallclock"]) \
            if name in summary["speedups"] else "—"
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {speed_cell(r)} | {np.mean(r['final_fd']):.1f} | "
                     f"{to_ref} | {delta} | {speedup_cell(summary, name)} |")
    return "\n".join(lines) + "\n"


def speedup_cell(summary: dict, name: str) -> str:
    for key, s in summary["paper_speedups"].items():
        a, b = key.split(" vs ")
        if a == name:
            return f"{median_cell(s)} vs {ROWS[b].label} ({s['claimed']:g}×)"
    return "—"


def speedup_lines(summary: dict) -> list[str]:
    """The papers' own speed-up definition, per claim (ttq_endpoints.speedup_to_baseline_final)."""
    if not summary["paper_speedups"]:
        return []
    lines = ["", "Speed-up as the papers define it: images the baseline needs to reach its own final FD over images the "
             "row needs to reach the same FD, per seed. Median over all seeds (a seed that never got there counts "
             "as the lowest; \"not reached\" when half did not), the geometric mean [95 % bootstrap] (t: [95 % "
             "Student-t]) over the seeds that got there, and the median in wall-clock (× the img/s ratio).", "",
             "| claim | paper | seeds reached | median, images | mean over those reached, images | median, wall-clock |",
             "|---|---|---|---|---|---|"]
    for key, s in summary["paper_speedups"].items():
        a, b = key.split(" vs ")
        c, median = s["ln_speedup"], s["median_speedup"]
        reached = len(c["seeds"]) if c else 0
        mean = "—" if c is None else geometric_mean_ci(c)
        speed_a, speed_b = summary["rows"][a]["img_per_s"], summary["rows"][b]["img_per_s"]
        wall = f"{median * speed_a / speed_b:.2f}×" if median and speed_a and speed_b else "—"
        lines.append(f"| {ROWS[a].label} vs {ROWS[b].label} | {s['claimed']:g}× | "
                     f"{reached}/{reached + len(s['not_reached'])} | "
                     f"{f'{median:.2f}×' if median else 'not reached'} | {mean} | {wall} |")
    return lines


def geometric_mean_ci(c: dict) -> str:
    """A ln speed-up's paired comparison as a factor with its intervals; one seed has none."""
    mean = f"{np.exp(c['mean']):.2f}×"
    if not np.isfinite(c["ci95"][0]):
        return f"{mean} (one seed)"
    return (f"{mean} [{np.exp(c['ci95'][0]):.2f}, {np.exp(c['ci95'][1]):.2f}] "
            f"(t: [{np.exp(c['t_ci95'][0]):.2f}, {np.exp(c['t_ci95'][1]):.2f}])")


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


# Okabe & Ito's colour-blind-safe palette
PALETTE = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#CC79A7", "#0072B2", "#F0E442"]


def plot(summary: dict, path: Path) -> None:
    """Small multiples: one column per row family (ttq_rows.PLOT_FAMILIES, ≤ 6 lines each), FD_fmnist (log scale)
    against training minutes (top, from the measured img/s) and against training images (bottom); each line is
    the geometric mean over seeds with a 95 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    with_results = {title: [n for n in names if n in summary["rows"]] for title, names in PLOT_FAMILIES.items()}
    families = drawn_families(with_results)
    if not families:
        families = {"all rows": list(summary["rows"])[:len(PALETTE)]}
    timed = any(summary["rows"][n]["img_per_s"] for names in families.values() for n in names)
    fig, axes = plt.subplots(1 + timed, len(families), figsize=(5.2 * len(families), 3.7 * (1 + timed)),
                             squeeze=False, sharey=True)
    colours = row_colours(families)
    for col, (title, names) in enumerate(families.items()):
        for name in names:
            plot_row(axes[:, col], summary["rows"][name], colours[name])
        axes[0, col].set_title(title, fontsize=10)
        axes[-1, col].legend(fontsize=7, loc="upper right")
    log_x = any(summary["rows"][n]["log_axis"] for names in families.values() for n in names)
    for ax in axes.flat:
        ax.set_yscale("log")
        if log_x:  # a geometric grid: each doubling of training gets the same width
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(plot_number))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(plot_number))
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:, 0]:
        ax.set_ylabel("FD_fmnist (log scale, lower is better)")
    scale = " (log scale)" if log_x else ""
    for ax in axes[0] if timed else []:
        ax.set_xlabel(f"training wall-clock (minutes, 2-core CPU){scale}")
    for ax in axes[-1]:
        ax.set_xlabel(f"training images (kimg){scale}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def drawn_families(families: dict[str, list[str]]) -> dict[str, list[str]]:
    """The panels worth drawing: ≥ 2 rows with results (a comparison) of which ≥ 1 is in no earlier panel (a panel
    that only repeats rows drawn already shows nothing new)."""
    drawn, seen = {}, set()
    for title, names in families.items():
        if len(names) > 1 and set(names) - seen:
            drawn[title] = names
            seen |= set(names)
    return drawn


def row_colours(families: dict[str, list[str]]) -> dict[str, str]:
    """One colour per row, the same in every panel, distinct within each panel: black for the reference row, and
    for the others, greedily in panel order, the first palette colour that no row sharing a panel with it has taken
    (≤ 6 rows a panel, 7 colours)."""
    colours: dict[str, str] = {REFERENCE_ROW: PALETTE[0]}
    for names in families.values():
        for name in names:
            if name not in colours:
                taken = {colours[other] for panel in families.values() if name in panel for other in panel
                         if other in colours}
                colours[name] = next(c for c in PALETTE[1:] if c not in taken)
    return colours


def plot_number(value: float, _position) -> str:
    return f"{value:.0f}"


def plot_row(axes, r: dict, color: str) -> None:
    """One row's mean ln FD curve with its 95 % band (normal interval over seeds): against minutes in the top
    panel (when the figure has one and the row a measured img/s), against images in the bottom one."""
    kimg, fds = np.array(r["curve_kimg"]), np.log(np.array(r["curve_fd"]))  # (K,), (S, K)
    mean = fds.mean(0)
    half = 1.96 * fds.std(0, ddof=1) / np.sqrt(len(fds)) if len(fds) > 1 else np.zeros_like(mean)
    timed = len(axes) > 1 and r["img_per_s"]
    panels = ([(axes[0], kimg * 1000 / r["img_per_s"] / 60)] if timed else []) + [(axes[-1], kimg)]
    for ax, xs in panels:
        ax.plot(xs, np.exp(mean), marker="o", ms=3, color=color, label=f"{r['label']} (n={len(fds)})")
        ax.fill_between(xs, np.exp(mean - half), np.exp(mean + half), color=color, alpha=0.15)


def write_report(root: Path, readmes: list[Path] = (), section: str = "ttq") -> str:
    """Rebuild table.md, summary.json and quality.png under a protocol's results folder `root`, and in each of
    `readmes` the sections between the full-table and the short-table markers it holds (`<section>-table`,
    `<section>-summary`: one pair per protocol a page shows), from the committed run and throughput files alone.
    -> the table."""
    summary = build_summary(root)
    if not summary["rows"]:
        sys.exit(f"error: no finished runs under {root / 'runs'}")
    table = markdown(summary, root.name)
    (root / "table.md").write_text(table)
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, root / "quality.png")
    for readme in readmes:
        sections = {markers(f"{section}-table"): table,
                    markers(f"{section}-summary"): short_markdown(summary, root.name, full_results_link(root, readme))}
        replace_sections(readme, sections)
    return table


def full_results_link(root: Path, page: Path) -> str:
    """The link from `page` to the full results: the benchmark's docs page (the protocols' folder's README.md), or
    on that page itself, the protocol's table.md."""
    docs_page = (root.parent / "README.md").resolve()
    target = root.resolve() / "table.md" if Path(page).resolve() == docs_page else docs_page
    return os.path.relpath(target, Path(page).resolve().parent)
