"""One-shot GPU check: the training step's speed and memory at the reference's sizes, in one table.

Runs benchmarks/throughput.py (the real Trainer step) once per configuration, each in its own process with
its own time limit, so an out-of-memory error or a slow compile costs one row, not the check:

  first DiT-XL/2 batch 128 compiled, with the plain inductor and then the settings of COMPILE_SETTINGS until
  one compiles; with that setting MaskDiT-XL/2 batch 256 compiled, the fastest option set (compiled + bf16
  residual stream + FP8 where the GPU and torchao allow it) of both, and the fastest MaskDiT set under an
  activation memory budget of 0.5 (for the ≤ 56 GiB target); last the eager steps of both, all in bf16.

Writes gpu_check.json (rows + torch version, GPU name, peak TFLOP/s used for MFU) and gpu_check.md under --out.
Started by benchmarks/gpu_check.sh, which installs the missing packages from local wheels first. `--tiny`
runs the same logic on a CPU with a tiny model (tests/test_gpu_check.py), so the script is known to work
before a GPU is ever lent.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.fp8 import fp8_refusal  # noqa: E402

MASKDIT = ["--arch", "XL", "--batch", "256", "--mask-ratio", "0.5"]
DIT = ["--arch", "XL", "--batch", "128", "--mask-ratio", "0", "--no-decoder"]
TINY = ["--arch", "S", "--depth", "2", "--width", "64", "--heads", "2", "--decoder-depth", "1", "--resolution", "8",
        "--batch", "4"]
TARGETS = {"MaskDiT": {"img_per_s": 1300, "peak_gib": 56}, "DiT": {"img_per_s": 550}}  # issue #16, one H100


# The first check (one H200, torch 2.11, 2026-11-28; docs/benchmarks/gpu/) measured both eager steps, then
# DiT-XL/2's compiled step failed inside Triton ("PassManager::run failed" on the fused loss reduction) and
# MaskDiT-XL/2's did not compile within its 133 s. So the compile question comes first: the plain inductor, then
# two settings that change how that reduction is generated; every compiled row after it uses the first that works.
COMPILE_SETTINGS = [[], ["--inductor", "triton.persistent_reductions=false"],
                    ["--inductor", "triton.mix_order_reduction=false"]]


def probe_name(setting: list[str]) -> str:
    return "DiT-XL/2 compiled" + (f", {setting[1]}" if setting else "")


def find_compile_setting(run) -> tuple[list[dict], list[str] | None]:
    """Compile DiT-XL/2 with each setting until one works: (the probe rows, that setting or None)."""
    rows = []
    for setting in COMPILE_SETTINGS:
        rows.append(run(probe_name(setting), DIT + ["--compile"] + setting))
        if "error" not in rows[-1]:
            return rows, setting
    return rows, None


def configurations(fast: list[str], setting: list[str]) -> list[tuple[str, list[str]]]:
    """The rows after the probe: compiled ones with the setting that compiled, then the eager baselines."""
    compiled = ["--compile"] + setting
    return [("MaskDiT-XL/2 compiled", MASKDIT + compiled), ("MaskDiT-XL/2 fastest", MASKDIT + compiled + fast),
            ("DiT-XL/2 fastest", DIT + compiled + fast),
            ("MaskDiT-XL/2 fastest, memory budget 0.5", MASKDIT + compiled + fast + ["--memory-budget", "0.5"]),
            ("MaskDiT-XL/2 eager", MASKDIT), ("DiT-XL/2 eager", DIT)]


def tiny(args_list: list[str]) -> list[str]:
    """The same configuration at a CPU-sized model: the XL size flags swapped for TINY."""
    out, skip = [], 0
    for i, a in enumerate(args_list):
        if skip:
            skip -= 1
            continue
        if a in ("--arch", "--batch"):
            skip = 1
            continue
        out.append(a)
    return TINY + out


def run_one(name: str, flags: list[str], common: list[str], limit_s: float) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), *flags, *common]
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"did not finish within {limit_s:.0f} s"}
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        return {"name": name, "error": f"exit {proc.returncode}: {error_line(proc.stderr)[:300]}"}
    return {"name": name, **rows[-1], "wall_s": round(time.time() - start, 1)}


def error_line(stderr: str) -> str:
    """The last line naming an error (torch.compile ends its traceback with a hint, not the error), else the last."""
    lines = stderr.strip().splitlines() or ["no output"]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line.strip())]
    return (named or lines)[-1].strip()


def environment(peak_tflops: float) -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    return {"torch": torch.__version__, "gpu": gpu, "peak_tflops_for_mfu": peak_tflops,
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"GPU check: {env['gpu']}, torch {env['torch']}, {env['when']}; MFU against {env['peak_tflops_for_mfu']:g} "
             "TFLOP/s.", "", "| configuration | model | options | img/s | TFLOP/s | MFU | peak GiB | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | | | | | | | {r['error']} |")
            continue
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "–"
        lines.append(f"| {r['name']} | {r['arch']} batch {r['batch']} | {r['options']} | {r['img_per_s']:.1f} | "
                     f"{r['tflop_per_s']:.1f} | "
                     f"{r['mfu']:.1%} | {peak} | |")
    return "\n".join(lines) + "\n"


class Check:
    """Runs rows one after another inside the check's time budget, writing gpu_check.json after every row, so a
    machine taken back mid-check still leaves the rows measured so far."""

    def __init__(self, out: Path, env: dict, common: list[str], deadline: float, row_limit_s: float, tiny_size: bool):
        self.out, self.env, self.common, self.deadline = out, env, common, deadline
        self.row_limit_s, self.tiny_size, self.rows = row_limit_s, tiny_size, []

    def run(self, name: str, flags: list[str]) -> dict:
        left = self.deadline - time.time()
        if left < 20:
            return self.record({"name": name, "error": "skipped: the check's time budget was spent"})
        flags = tiny(flags) if self.tiny_size else flags
        return self.record(run_one(name, flags, self.common, min(left, self.row_limit_s)))

    def record(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        (self.out / "gpu_check.json").write_text(json.dumps({"environment": self.env, "rows": self.rows}, indent=1) + "\n")
        return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="CPU logic check: tiny model, aot_eager, 2 steps")
    p.add_argument("--budget-s", type=float, default=450, help="total seconds for all configurations")
    p.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 dense peak for MFU (H100 SXM measured)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fp8_blocker = fp8_refusal(torch.device("cuda" if torch.cuda.is_available() else "cpu"), "bf16")
    fast = ["--residual-bf16"] + ([] if fp8_blocker else ["--fp8"])
    common = ["--precision", "bf16", "--peak-tflops", str(args.peak_tflops)]
    common += ["--steps", "2", "--warmup", "1", "--compile-backend", "aot_eager"] if args.tiny else \
        ["--steps", "15", "--warmup", "4"]
    env = {**environment(args.peak_tflops), "fp8": fp8_blocker or "on"}
    check = Check(out, env, common, time.time() + args.budget_s, args.budget_s / 2, args.tiny)
    _, setting = find_compile_setting(check.run)
    for name, flags in configurations(fast, setting or []):
        if setting is None and "--compile" in flags:
            check.record({"name": name, "error": "skipped: no inductor setting compiled DiT-XL/2"})
        else:
            check.run(name, flags)
    rows = check.rows
    (out / "gpu_check.md").write_text(markdown(env, rows))
    return rows


if __name__ == "__main__":
    main()
