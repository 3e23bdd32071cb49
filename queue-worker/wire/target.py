"""What a queued request may invoke: one function through ``/function/<name>``, nothing else.

The gateway routes ``/function/<name>/<path>`` to the function; a name or path with a
dot-segment (``..``, plain or percent-encoded, or behind a backslash that some proxies read as
a slash) would leave that prefix once a proxy normalises it, and reach the gateway's system API.
Both the decoder and the front door check here, so a request that passes is safe to send
whichever route it came by. No I/O.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: The gateway's function name rule (its ``NameExpression``), ``name`` or ``name.namespace``.
NAME = re.compile(r"[-a-zA-Z_0-9.]+")
#: Percent-decoding rounds looked through: proxies in a chain may each decode once.
DECODE_ROUNDS = 4


class InvalidTarget(ValueError):
    """A function name or path that could reach something other than that function."""


def check_function(name: str) -> str:
    """``name`` when it is a valid function name.

    Raises:
        InvalidTarget: empty, ``.``, ``..``, or a character the gateway does not allow.
    """
    if NAME.fullmatch(name) is None or name in (".", ".."):
        raise InvalidTarget(f"function name {name[:80]!r} is not [-a-zA-Z_0-9.]+ (and not . or ..)")
    return name


def check_path(path: str) -> str:
    """``path`` when no reading of it holds a dot-segment.

    Raises:
        InvalidTarget: not empty and not starting with ``/`` (it would extend the function's
            name), or a ``.`` or ``..`` segment, as written or once percent-decoded.
    """
    if path and not path.startswith("/"):
        raise InvalidTarget(f"path {path[:80]!r} does not start with /")
    text = path
    for _ in range(DECODE_ROUNDS):
        if _has_dot_segment(text):
            raise InvalidTarget(f"path {path[:80]!r} has a dot-segment")
        if "%" not in text:
            return path
        decoded = unquote(text, errors="surrogateescape")
        if decoded == text:
            return path
        text = decoded
    if _has_dot_segment(text) or "%" in text:
        raise InvalidTarget(f"path {path[:80]!r} is encoded more than {DECODE_ROUNDS} times over")
    return path


def _has_dot_segment(path: str) -> bool:
    if "." not in path:
        return False
    return any(segment in (".", "..") for segment in re.split(r"[/\\;]", path))
