"""Call the function through the gateway with what the message stored."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from .queue_request import QueueRequest
from .transport import forwardable

#: Status recorded when the gateway cannot be reached at all.
TRANSPORT_FAILURE_STATUS = 503
#: Status recorded when the call outlives ``upstream_timeout``.
TIMEOUT_STATUS = 504


@dataclass(frozen=True, slots=True)
class Result:
    """What one invocation produced; ``error`` is set when no HTTP response came back."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    duration_s: float
    error: str = ""

    def header_map(self) -> dict[str, str]:
        """Response headers with lower-case names (the last value of a repeated one)."""
        return {name.lower(): value for name, value in self.headers}


def request_headers(request: QueueRequest) -> list[tuple[str, str]]:
    """Every stored header value, in order, minus those that must not be forwarded."""
    return forwardable((name, value) for name, values in request.header.items() for value in values)


class Invoker:
    """Invokes functions at ``{gateway_url}/function/...`` within ``timeout_s``."""

    def __init__(self, *, session: aiohttp.ClientSession, gateway_url: str, timeout_s: float) -> None:
        self.session = session
        self._gateway_url = gateway_url
        self._timeout_s = timeout_s

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.session.close()

    def url(self, request: QueueRequest) -> str:
        """The full URL the function is called at."""
        return self._gateway_url + request.invoke_path()

    async def invoke(self, request: QueueRequest) -> Result:
        """Make the call; a transport failure becomes 503 and a timeout 504, never an exception."""
        started = time.perf_counter()
        try:
            # The session's ClientTimeout(total=upstream_timeout) bounds connecting, sending and reading.
            async with self.session.request(
                request.method,
                self.url(request),
                headers=request_headers(request),
                data=request.body,
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except TimeoutError:
            elapsed = time.perf_counter() - started
            return Result(TIMEOUT_STATUS, (), b"", elapsed, f"no answer within {self._timeout_s:g}s")
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Result(TRANSPORT_FAILURE_STATUS, (), b"", time.perf_counter() - started, detail)
        return Result(response.status, tuple(response.headers.items()), body, time.perf_counter() - started)
