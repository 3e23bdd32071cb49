"""Go duration strings (``500ms``, ``10s``, ``1m30s``) to float seconds.

Durations are read the way Go's ``time.ParseDuration`` reads them, so values carry over
unchanged from the OpenFaaS charts. Inside the runtime every duration is float seconds.
"""

from __future__ import annotations

import re
from fractions import Fraction

#: Seconds per unit, with the two spellings Go accepts for micro.
UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 1_000_000_000),
    "us": Fraction(1, 1_000_000),
    "\u00b5s": Fraction(1, 1_000_000),
    "\u03bcs": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1_000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}

_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration string.

    Returns:
        The duration in seconds; negative when the text starts with ``-``.

    Raises:
        ValueError: the text is not a Go duration (a bare number other than ``0`` has no unit).
    """
    rest = text
    sign = 1
    if rest[:1] in ("-", "+"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    position = 0
    while position < len(rest):
        match = _TERM.match(rest, position)
        if match is None or not (match.group(1) or match.group(2)):
            raise ValueError(f"invalid duration {text!r}: expected a number and a unit (ns, us, ms, s, m, h)")
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        value = Fraction(int(whole or "0")) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
        total += value * UNITS[unit]
        position = match.end()
    return float(sign * total)


def format_duration(seconds: float) -> str:
    """Format seconds the short way Go prints common durations (``1m30s``, ``500ms``, ``0s``)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    remaining = abs(seconds)
    if remaining < 1:
        return f"{sign}{remaining * 1000:g}ms"
    hours, remaining = divmod(remaining, 3600)
    minutes, remaining = divmod(remaining, 60)
    text = ""
    if hours:
        text += f"{int(hours)}h"
    if hours or minutes:
        text += f"{int(minutes)}m"
    return f"{sign}{text}{remaining:g}s"
