"""The last-resort guard of every command: an error that escapes the specific checks (each of which prints its
own one line naming the file, key or shape at fault) becomes one line naming the command line and the error,
never a long traceback by default. `--debug` (anywhere on the command line) or MASKDIT_DEBUG=1 shows the full
traceback instead."""

import os
import sys
from pathlib import Path

from utils.atomic import DiskFullError, UnwritableError

DEBUG_ENV = "MASKDIT_DEBUG"


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def run_command(main, release=None) -> None:
    """Run a command's `main` under the guard; `release` (e.g. the process group's teardown) runs in any case."""
    debug = "--debug" in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    try:
        main()
    except (DiskFullError, UnwritableError) as err:  # a write that failed, wherever: already one line naming it
        if debug:
            raise
        sys.exit(f"error: {err}")
    except Exception as err:  # SystemExit and KeyboardInterrupt pass: they are not errors of the command
        if debug:
            raise
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        sys.exit(f"error: {command}: unexpected {type(err).__name__}: {first_line(err)} (run with --debug or "
                 f"{DEBUG_ENV}=1 for the full traceback)")
    finally:
        if release is not None:
            release()
