"""Generated markdown: tables, and sections of a file rewritten between their markers.

Each benchmark's report command writes its full table into docs/benchmarks/<name>/ and its short table into
README.md between a begin / end marker pair, from the committed result files alone, so no table is copied by hand.
"""

import re
import sys
from pathlib import Path

from utils.atomic import atomic_write_text


def table(head: list[str], rows: list[list]) -> str:
    """A markdown table (cells already formatted as strings or numbers)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def markers(name: str) -> tuple[str, str]:
    """The begin / end marker pair of a generated section, e.g. ("<!-- gpu-summary:begin -->", ...)."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_sections(path: Path, sections: dict[tuple[str, str], str]) -> None:
    """Replace the text between each marker pair that `path` holds; at least one pair must be there (else one
    error line naming the file and the markers looked for)."""
    path = Path(path)
    text, found = path.read_text(), 0
    for (begin, end), body in sections.items():
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        if pattern.search(text):
            found += 1
            text = pattern.sub(lambda _: f"{begin}\n{body}{end}", text)
    if not found:
        sys.exit(f"error: {path} has none of the sections {', '.join(b for b, _ in sections)} to replace")
    atomic_write_text(path, text)
