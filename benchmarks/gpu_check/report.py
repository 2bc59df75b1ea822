"""The GPU check's tables, rebuilt from the committed gpu_check.json files alone.

Every check run is one `<stamp>-<gpu>-gpu_check.json` under docs/benchmarks/gpu/ (environment + rows). The full
report (docs/benchmarks/gpu/README.md, between the `gpu-table` markers) has every check's table, newest first;
README.md's short table (`gpu-summary`) has, from the newest check, the fastest measured row of each model beside
the reference's numbers and the targets.
"""

import json
import sys
from pathlib import Path

from benchmarks.markdown import markers, replace_sections, table

SUMMARY = markers("gpu-summary")
FULL = markers("gpu-table")

# model (a row's "arch") -> its setting, the reference's numbers on one H100 (REFERENCE.md §4) and the target
# (issue #16, one H100)
MODELS = {
    "MaskDiT-XL/2": {"label": "MaskDiT-XL/2, 50 % mask, batch 256",
                     "reference": "663 img/s eager (73.7 GiB), 977 compiled (62.9 GiB)",
                     "target": "≥ 1,300 img/s, ≤ 56 GiB"},
    "DiT-XL/2": {"label": "DiT-XL/2, batch 128", "reference": "347 img/s (fp16), 59.4 GiB", "target": "≥ 550 img/s"},
}


def cell(row: dict, key: str, fmt: str) -> str:
    """A measured value formatted, or '–' where the row (an older check's) lacks it."""
    return format(row[key], fmt) if row.get(key) is not None else "–"


def check_table(env: dict, rows: list[dict]) -> str:
    """One check: its environment line and one table row per configuration (a failed row shows its error)."""
    head = (f"GPU check: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, "
            f"Triton {env.get('triton', 'not recorded')}, {env.get('when', '?')}; MFU against {env.get('peak_tflops_for_mfu', 0):g} TFLOP/s.\n\n")
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["name"], "", "", "", "", "", "", "", "", r["error"]])
            continue
        body.append([r["name"], f"{r['arch']} batch {r['batch']}", r.get("options", "-"),
                     cell(r, "img_per_s", ".1f"), cell(r, "step_s", ".3f"), cell(r, "compile_s", ".0f"),
                     cell(r, "tflop_per_s", ".1f"), cell(r, "mfu", ".1%"), cell(r, "peak_gib", ".1f"), ""])
    return head + table(["configuration", "model", "options", "img/s", "step s", "compile s", "TFLOP/s", "MFU",
                         "peak GiB", "note"], body)


def load_checks(root: Path) -> list[tuple[str, dict]]:
    """(file stem, record) of every check under `root`, newest first (the stems start with the date)."""
    found = [(f.stem, json.loads(f.read_text())) for f in sorted(Path(root).glob("*gpu_check.json"), reverse=True)]
    if not found:
        sys.exit(f"error: no *gpu_check.json under {root}")
    return found


def summary_table(record: dict) -> str:
    """The fastest measured row of each model in one check, beside the reference and the target."""
    env, body = record["environment"], []
    for arch, model in MODELS.items():
        measured = [r for r in record["rows"] if r.get("arch") == arch and "error" not in r]
        if not measured:
            body.append([model["label"], "no row finished", *["–"] * 4, model["reference"], model["target"]])
            continue
        best = max(measured, key=lambda r: r["img_per_s"])
        setting = best["name"].removeprefix(arch).strip() or "eager"
        body.append([model["label"], setting, f"{best['img_per_s']:.0f}", f"{best['gflop_per_img']:.0f}",
                     f"{best['tflop_per_s']:.0f} ({best['mfu']:.1%})", cell(best, "peak_gib", ".1f"),
                     model["reference"], model["target"]])
    note = (f"{env.get('gpu', '?')}, torch {env.get('torch', '?')}, {env.get('when', '?')[:10]}, bf16; MFU against "
            f"{env.get('peak_tflops_for_mfu', 0):g} TFLOP/s.\n\n")
    return note + table(["step", "fastest setting", "img/s", "GFLOP/img", "TFLOP/s (MFU)", "peak GiB",
                         "reference, one H100", "target, one H100"], body)


def write_report(root: Path, readmes: list[Path]) -> None:
    """Rewrite the full table in root/README.md and the short one in each of `readmes`, between their markers."""
    checks = load_checks(root)
    full = "\n".join(f"### `{stem}`\n\n{check_table(rec['environment'], rec['rows'])}" for stem, rec in checks)
    sections = {FULL: full, SUMMARY: summary_table(checks[0][1])}
    for path in [Path(root) / "README.md", *readmes]:
        replace_sections(path, sections)
