"""How the command-line tool prints: aligned columns for people, JSON for scripts.

Tables are written here rather than with rich or tabulate: kubectl-style columns (no box
characters, no wrapping to the terminal's width, one row a line) are what ``grep`` and ``awk``
take and what a platform engineer expects, and they take a dozen lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def table(header: Sequence[str], rows: Iterable[Sequence[object]], out: TextIO = sys.stdout) -> None:
    """Columns padded to their widest cell, two spaces apart; ``-`` for an empty cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    for row in (list(header), *cells):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def fields(pairs: Sequence[tuple[str, object]], out: TextIO = sys.stdout) -> None:
    """``name:  value`` lines, the values aligned."""
    width = max((len(name) for name, _ in pairs), default=0) + 3
    for name, value in pairs:
        out.write(f"{name + ':':<{width}}{_cell(value)}".rstrip() + "\n")


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def emit_json(value: Any, out: TextIO = sys.stdout) -> None:
    """One JSON document, sorted keys, for scripts."""
    out.write(json.dumps(value, sort_keys=True, default=str) + "\n")


def age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: as kubectl shows ages."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def since(moment: datetime | float | None, now: datetime | None = None) -> float | None:
    """Seconds from ``moment`` (a datetime or a Unix time) until ``now``."""
    if moment is None:
        return None
    now = now or datetime.now(UTC)
    if isinstance(moment, datetime):
        return (now - moment).total_seconds()
    return now.timestamp() - moment
