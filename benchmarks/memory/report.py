"""The memory report: the expected-peak tables, rebuilt from the committed memory.json files alone.

Each folder under docs/benchmarks/memory/ holds one `python -m benchmarks.memory estimate --out <folder>`. The
full report (docs/benchmarks/memory/README.md) has every folder's table; README.md's short table (between the
`memory-summary` markers) has the expected peak of each activation-checkpointing option, one column per folder
named in COLUMNS.
"""

import json
import sys
from pathlib import Path

from benchmarks.markdown import markers, replace_sections, table
from utils.atomic import atomic_write_text

# the README's columns, in order: result folder -> header
COLUMNS = {"maskdit-xl2-b256-bf16": "MaskDiT-XL/2 b256", "maskdit-xl2-b256-bf16-residual-bf16": "+ `residual_bf16`",
           "dit-xl2-b128-bf16": "DiT-XL/2 b128"}
SUMMARY = markers("memory-summary")
FULL = markers("memory-table")


def load_estimates(root: Path) -> dict[str, list[dict]]:
    """folder name -> its rows (one per checkpointing option), for every memory.json under `root`."""
    found = {f.parent.name: json.loads(f.read_text()) for f in sorted(Path(root).glob("*/memory.json"))}
    if not found:
        sys.exit(f"error: no */memory.json under {root}")
    return found


def option(row: dict) -> str:
    return f"{row['grad_checkpointing']} / {row['every']}"


def summary_table(estimates: dict[str, list[dict]]) -> str:
    """Options down, the COLUMNS folders across: expected peak GiB ('–' where a folder lacks the option)."""
    columns = [name for name in COLUMNS if name in estimates]
    peaks = {name: {option(r): r["expected_peak_gib"] for r in estimates[name]} for name in columns}
    options = list(dict.fromkeys(option(r) for name in columns for r in estimates[name]))
    rows = [[f"{o}"] + [f"{peaks[n][o]:.1f}" if o in peaks[n] else "–" for n in columns] for o in options]
    return table(["`model.grad_checkpointing` / every", *(COLUMNS[n] for n in columns)], rows)


def folder_table(rows: list[dict]) -> str:
    return table(["grad_checkpointing", "every", "params (M)", "weights + grads + Adam + EMA (GiB)",
                  "saved per image (MiB)", "saved (GiB)", "expected peak (GiB)"],
                 [[r["grad_checkpointing"], r["every"], f"{r['params_m']:.0f}", f"{r['static_gib']:.1f}",
                   f"{r['saved_per_image_mib']:.1f}", f"{r['saved_gib']:.1f}", f"{r['expected_peak_gib']:.1f}"]
                  for r in rows])


def full_report(estimates: dict[str, list[dict]]) -> str:
    parts = [f"### `{name}`\n\n{folder_table(rows)}" for name, rows in estimates.items()]
    return "\n".join(parts)


def write_report(root: Path, readmes: list[Path]) -> None:
    """Rewrite the full table in root/README.md and the short one in each of `readmes`, between their markers."""
    estimates = load_estimates(root)
    sections = {FULL: full_report(estimates), SUMMARY: summary_table(estimates)}
    doc = Path(root) / "README.md"
    if not doc.exists():
        atomic_write_text(doc, f"# Expected peak memory\n\n{FULL[0]}\n{FULL[1]}\n")
    for path in [doc, *readmes]:
        replace_sections(path, sections)
