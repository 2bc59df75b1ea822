"""Expected peak training memory (run from the repository root):

  python -m benchmarks.memory estimate --arch XL --batch 256 --mask-ratio 0.5 --out docs/benchmarks/memory/maskdit-xl2-b256-bf16
  python -m benchmarks.memory report --readme README.md

`estimate` counts what the training forward saves for backward per activation-checkpointing option
(estimate.py; `estimate --help`); `report` rebuilds docs/benchmarks/memory/README.md and the README's short table
from the committed memory.json files alone (report.py).
"""

import argparse
import sys
from pathlib import Path

from benchmarks.memory import estimate, report


def report_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory report", description=report.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/benchmarks/memory", help="folders of memory.json files")
    p.add_argument("--readme", nargs="*", default=[], help="also rewrite the short table in these files")
    args = p.parse_args(argv)
    report.write_report(Path(args.results), [Path(r) for r in args.readme])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"estimate": estimate.main, "report": report_main}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.rstrip())
    elif argv[0] not in commands:
        sys.exit(f"error: unknown command {argv[0]!r}; one of {', '.join(commands)} (see --help)")
    else:
        commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
