"""The one-shot GPU check (run from the repository root):

  OUT=/some/dir bash benchmarks/gpu_check/check.sh  # on the GPU machine (installs missing packages first)
  python -m benchmarks.gpu_check run --out results/gpu-check --tiny  # the check itself (check.py; run --help)
  python -m benchmarks.gpu_check report --readme README.md  # docs/benchmarks/gpu/README.md + the README's table
"""

from benchmarks.entry import dispatch, report_command
from benchmarks.gpu_check import check, report

COMMANDS = {"run": check.main,
            "report": report_command("python -m benchmarks.gpu_check report", report, "docs/benchmarks/gpu",
                                     "folder of *gpu_check.json files")}


def main(argv: list[str] | None = None) -> None:
    dispatch(__doc__, COMMANDS, argv)


if __name__ == "__main__":
    main()
