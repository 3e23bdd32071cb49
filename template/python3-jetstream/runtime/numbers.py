"""Numbers read from text that strangers write (headers, annotations, environment variables).

``str.isdigit`` accepts superscripts and other Unicode digits, and ``int`` accepts Arabic-Indic
and full-width ones: neither is what an HTTP or NATS peer means. Only ASCII digits are read
here, so a value is either a number every peer agrees on or an error.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str, *, max_digits: int = 18) -> int:
    """A non-negative whole number written in ASCII digits only (no sign, no spaces).

    Raises:
        ValueError: anything else, or more than ``max_digits`` digits.
    """
    if len(text) > max_digits or _DIGITS.fullmatch(text) is None:
        raise ValueError(f"not a whole number in ASCII digits: {text[:40]!r}")
    return int(text)


def ascii_int_or_none(text: str, *, max_digits: int = 18) -> int | None:
    """:func:`ascii_int`, or ``None`` where that raises."""
    try:
        return ascii_int(text, max_digits=max_digits)
    except ValueError:
        return None
