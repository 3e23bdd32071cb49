"""Which headers pass from a stored request to the function, and from its response to the callback."""

from __future__ import annotations

import base64
from collections.abc import Iterable

#: Headers that belong to one connection (RFC 9110 section 7.6.1) and are never forwarded,
#: plus the two that the client sets itself for the new request.
NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def forwardable(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, those a ``Connection`` header names, ``Host`` and ``Content-Length``."""
    pairs = list(headers)
    named = {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
    return [(name, value) for name, value in pairs if name.lower() not in NOT_FORWARDED and name.lower() not in named]


def basic_authorization(user: str, password: str) -> str:
    """An ``Authorization`` value for HTTP basic auth, of the UTF-8 credentials as Go sends them."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
