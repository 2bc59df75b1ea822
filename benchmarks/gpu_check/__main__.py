"""The one-shot GPU check (run from the repository root):

  OUT=/some/dir bash benchmarks/gpu_check/check.sh  # on the GPU machine (installs missing packages first)
  python -m benchmarks.gpu_check run --out results/gpu-check --tiny  # the check itself (check.py; run --help)
  python -m benchmarks.gpu_check report --readme README.md  # docs/benchmarks/gpu/README.md + the README's table
"""

import argparse
import sys
from pathlib import Path

from benchmarks.gpu_check import check, report


def report_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check report", description=report.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/benchmarks/gpu", help="folder of *gpu_check.json files")
    p.add_argument("--readme", nargs="*", default=[], help="also rewrite the short table in these files")
    args = p.parse_args(argv)
    report.write_report(Path(args.results), [Path(r) for r in args.readme])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": check.main, "report": report_main}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.rstrip())
    elif argv[0] not in commands:
        sys.exit(f"error: unknown command {argv[0]!r}; one of {', '.join(commands)} (see --help)")
    else:
        commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
