"""Numbers read from text that strangers write (headers, annotations, environment variables).

``str.isdigit`` accepts superscripts and other Unicode digits, and ``int`` accepts Arabic-Indic
and full-width ones: neither is what an HTTP or NATS peer means. Only ASCII digits are read
here, so a value is either a number every peer agrees on or an error.
"""

from __future__ import annotations


def ascii_int(text: str, *, max_digits: int = 18) -> int:
    """A non-negative whole number written in ASCII digits only (no sign, no spaces).

    Raises:
        ValueError: anything else, or more than ``max_digits`` digits.
    """
    # isdigit() on ASCII text is exactly [0-9]; both are C calls, cheaper than a regex.
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        raise ValueError(f"not a whole number in ASCII digits: {text[:40]!r}")
    return int(text)


def ascii_int_or_none(text: str, *, max_digits: int = 18) -> int | None:
    """:func:`ascii_int`, or ``None`` where that raises."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
