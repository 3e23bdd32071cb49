"""Header rules shared by the invocation and the callback, and the HTTP clients they use."""

from __future__ import annotations

from collections.abc import Iterable

import httpx

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


def make_client(*, timeout_s: float, max_connections: int, user_agent: str, verify: bool = True) -> httpx.AsyncClient:
    """One long-lived client with a pool sized to the work, redirects off and no proxy from env.

    Bodies pass through untouched: no ``Accept-Encoding`` is added and none is decoded, so
    the callback carries exactly what the function answered.
    """
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        headers={"User-Agent": user_agent},
    )
    del client.headers["Accept-Encoding"]
    return client
