"""Expected peak training memory (run from the repository root):

  python -m benchmarks.memory estimate --arch XL --batch 256 --mask-ratio 0.5 --out docs/benchmarks/memory/maskdit-xl2-b256-bf16
  python -m benchmarks.memory report --readme README.md

`estimate` counts what the training forward saves for backward per activation-checkpointing option
(estimate.py; `estimate --help`); `report` rebuilds docs/benchmarks/memory/README.md and the README's short table
from the committed memory.json files alone (report.py).
"""

from benchmarks.entry import dispatch, report_command
from benchmarks.memory import estimate, report

COMMANDS = {"estimate": estimate.main,
            "report": report_command("python -m benchmarks.memory report", report, "docs/benchmarks/memory",
                                     "folders of memory.json files")}


def main(argv: list[str] | None = None) -> None:
    dispatch(__doc__, COMMANDS, argv)


if __name__ == "__main__":
    main()
