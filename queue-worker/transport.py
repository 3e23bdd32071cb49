"""Header rules shared by the invocation and the callback, and the aiohttp sessions for
callbacks and the gateway's function check.

aiohttp, not httpx: httpx's connection pool slows down as concurrency grows (encode/httpx#3215);
`make bench` measured it at a tenth of aiohttp's rate at 100 calls in flight. Invocations, the
hot path, use :mod:`.gateway_client`.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver

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


def make_session(
    *,
    timeout_s: float,
    max_connections: int,
    user_agent: str,
    verify: bool = True,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """One long-lived session with a pool sized to the work, no proxy from the environment.

    Bodies pass through untouched: no ``Accept`` or ``Accept-Encoding`` is added and nothing is
    decompressed, so the callback carries exactly what the function answered. Must be created
    inside the running event loop.
    """
    return aiohttp.ClientSession(
        # ssl=True verifies certificates (the default); False skips it, for tls_insecure only.
        connector=aiohttp.TCPConnector(limit=max_connections, ssl=verify, resolver=resolver),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"User-Agent": user_agent},
        skip_auto_headers=("Accept", "Accept-Encoding"),
        auto_decompress=False,
        trust_env=False,
    )
