"""What a benchmark package's `python -m benchmarks.<name> <command> ...` entry shares: picking the subcommand, and
the report command that rewrites the tables from committed result files."""

import argparse
import sys
from pathlib import Path
from typing import Callable


def dispatch(doc: str, commands: dict[str, Callable[[list[str]], object]], argv: list[str] | None = None) -> None:
    """Run commands[argv[0]] on the rest of argv; no command or -h prints `doc`, an unknown one is one error line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(doc.rstrip())
    elif argv[0] not in commands:
        sys.exit(f"error: unknown command {argv[0]!r}; one of {', '.join(commands)} (see --help)")
    else:
        commands[argv[0]](argv[1:])


def report_command(prog: str, report_module, results_default: str, results_help: str) -> Callable[[list[str]], None]:
    """The `report` subcommand of a benchmark whose report module has write_report(results, readmes)."""

    def run_report(argv: list[str]) -> None:
        p = argparse.ArgumentParser(prog=prog, description=report_module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--results", default=results_default, help=results_help)
        p.add_argument("--readme", nargs="*", default=[], help="also rewrite the short table in these files")
        args = p.parse_args(argv)
        report_module.write_report(Path(args.results), [Path(r) for r in args.readme])

    return run_report
