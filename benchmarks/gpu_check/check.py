"""One-shot GPU check: the training step's speed and memory at the reference's sizes, in one table.

Runs python -m benchmarks.throughput (the real Trainer step) once per row, each in its own process with its own time
limit, so an out-of-memory error, a compile crash or a slow compile costs one row, not the check. Rows, surest
first, each written to gpu_check.json the moment it is measured (a check killed at its limit keeps them):

  MaskDiT-XL/2 batch 256 eager; then compiled at each scope of train.compile (training/compile_scope.py:
  blocks, the shortest compile, then net, then step); the fastest compiled scope with the fast options (bf16
  residual stream + FP8 where the GPU and torchao allow it), and under an activation memory budget of 0.5 (the
  ≤ 56 GiB target); DiT-XL/2 batch 128 eager and at the fastest scope. All bf16. A compiled row reports its
  compile time (first step minus a steady step) apart from its step time; a failed row's full stderr is kept
  in <out>/<row>.stderr.log.

Writes gpu_check.json (rows + torch/Triton versions, GPU name, peak TFLOP/s used for MFU) and gpu_check.md under
--out. Started by benchmarks/gpu_check/check.sh, which installs the missing packages from local wheels first. `--tiny`
runs the same logic on a CPU with a tiny model (tests/test_gpu_fast_path.py), so the script is known to work
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

from benchmarks import REPO
from benchmarks.gpu_check.report import check_table
from training.compile_scope import named_error_line
from training.fp8 import fp8_refusal

MASKDIT = ["--arch", "XL", "--batch", "256", "--mask-ratio", "0.5"]
DIT = ["--arch", "XL", "--batch", "128", "--mask-ratio", "0", "--no-decoder"]
TINY = ["--arch", "S", "--depth", "2", "--width", "64", "--heads", "2", "--decoder-depth", "1", "--resolution", "8",
        "--batch", "4"]


COMPILED_SCOPES = ["blocks", "net", "step"]  # shortest compile first
ROW_LIMIT_S = {"eager": 120, "compiled": 170}  # one H100: XL eager ~40 s with model build and FLOP count


def scope_rows() -> list[tuple[str, list[str]]]:
    """The rows before any choice: MaskDiT-XL/2 eager, then compiled at each scope."""
    return [("MaskDiT-XL/2 eager", MASKDIT + ["--compile", "none"])] + [
        (f"MaskDiT-XL/2 compiled {scope}", MASKDIT + ["--compile", scope]) for scope in COMPILED_SCOPES]


def fastest_scope(rows: list[dict]) -> str:
    """The compiled scope with the most img/s among the rows measured, else none (eager)."""
    compiled = [r for r in rows if "error" not in r and r.get("compile", "none") != "none"]
    return max(compiled, key=lambda r: r["img_per_s"])["compile"] if compiled else "none"


def option_rows(scope: str, fast: list[str]) -> list[tuple[str, list[str]]]:
    """The rows after the scope rows: the fast options at the fastest scope, the memory budget (compiled only),
    and DiT-XL/2."""
    compiled = ["--compile", scope]
    rows = [(f"MaskDiT-XL/2 fastest ({scope})", MASKDIT + compiled + fast)]
    if scope != "none":
        rows.append((f"MaskDiT-XL/2 fastest ({scope}), memory budget 0.5",
                     MASKDIT + compiled + fast + ["--memory-budget", "0.5"]))
    rows.append(("DiT-XL/2 eager", DIT + ["--compile", "none"]))
    if scope != "none":
        rows.append((f"DiT-XL/2 compiled {scope}", DIT + compiled))
    return rows


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


def run_one(name: str, flags: list[str], common: list[str], limit_s: float, out: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.throughput", *flags, *common]
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, cwd=REPO)
    except subprocess.TimeoutExpired as err:
        keep_stderr(out, name, err.stderr)
        return {"name": name, "error": f"did not finish within {limit_s:.0f} s"}
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        log = keep_stderr(out, name, proc.stderr)
        return {"name": name, "error": f"exit {proc.returncode}: {error_line(proc.stderr)[:300]} (stderr: {log})"}
    return {"name": name, **rows[-1], "wall_s": round(time.time() - start, 1)}


def keep_stderr(out: Path, name: str, stderr) -> str:
    """A failed row's whole stderr in <out>/<row name>.stderr.log. -> the file's name."""
    path = out / (re.sub(r"[^\w.-]+", "-", name).strip("-") + ".stderr.log")
    path.write_text(stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or ""))
    return path.name


def error_line(stderr: str) -> str:
    """The last line naming an error (torch.compile ends its traceback with a hint, not the error), else the last."""
    lines = stderr.strip().splitlines() or ["no output"]
    return (named_error_line(stderr) or lines[-1]).strip()


def environment(peak_tflops: float) -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return {"torch": torch.__version__, "triton": triton_version, "gpu": gpu, "peak_tflops_for_mfu": peak_tflops,
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


class Check:
    """Runs rows one after another inside the check's time budget, writing gpu_check.json after every row, so a
    machine taken back mid-check still leaves the rows measured so far."""

    def __init__(self, out: Path, env: dict, common: list[str], deadline: float, tiny_size: bool):
        self.out, self.env, self.common, self.deadline = out, env, common, deadline
        self.tiny_size, self.rows = tiny_size, []

    def run(self, name: str, flags: list[str]) -> dict:
        left = self.deadline - time.time()
        if left < 20:
            return self.record({"name": name, "error": "skipped: the check's time budget was spent"})
        limit_s = ROW_LIMIT_S["eager" if flags[flags.index("--compile") + 1] == "none" else "compiled"]
        flags = tiny(flags) if self.tiny_size else flags
        return self.record(run_one(name, flags, self.common, min(left, limit_s), self.out))

    def record(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        (self.out / "gpu_check.json").write_text(json.dumps({"environment": self.env, "rows": self.rows}, indent=1) + "\n")
        return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="CPU logic check: tiny model, aot_eager, 2 steps")
    p.add_argument("--budget-s", type=float, default=420,
                   help="total seconds for all rows (8 minutes on one H100 with the installs)")
    p.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 dense peak for MFU (H100 SXM measured)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fp8_blocker = fp8_refusal(torch.device("cuda" if torch.cuda.is_available() else "cpu"), "bf16")
    fast = ["--residual-bf16"] + ([] if fp8_blocker else ["--fp8"])
    common = ["--precision", "bf16", "--peak-tflops", str(args.peak_tflops)]
    # --tiny: the check's logic only (aot_eager traces without code generation; inductor on the CPU is
    # tests/test_compile_scope.py's business)
    common += ["--steps", "2", "--warmup", "1", "--compile-backend", "aot_eager"] if args.tiny else \
        ["--steps", "12", "--warmup", "3"]
    env = {**environment(args.peak_tflops), "fp8": fp8_blocker or "on"}
    check = Check(out, env, common, time.time() + args.budget_s, args.tiny)
    for name, flags in scope_rows():
        check.run(name, flags)
    for name, flags in option_rows(fastest_scope(check.rows), fast):
        check.run(name, flags)
    rows = check.rows
    (out / "gpu_check.md").write_text(check_table(env, rows))
    return rows


if __name__ == "__main__":
    main()
