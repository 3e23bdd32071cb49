"""Call the function through the gateway with what the message stored."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .gourl import URLError
from .headers import forwardable
from .origin_client import InvalidRequest, OriginClient, ProtocolError
from .queue_request import QueueRequest

#: Status recorded when the gateway cannot be reached at all.
TRANSPORT_FAILURE_STATUS = 503
#: Status recorded when the call outlives ``upstream_timeout``.
TIMEOUT_STATUS = 504
#: Status recorded when the stored request cannot be sent as it is.
INVALID_REQUEST_STATUS = 400


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

    def __init__(self, *, client: OriginClient, timeout_s: float) -> None:
        self.client = client
        self._timeout_s = timeout_s

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def url(self, request: QueueRequest) -> str:
        """The full URL the function is called at."""
        return self.client.url(request.invoke_path())

    async def invoke(self, request: QueueRequest) -> Result:
        """Make the call; a transport failure becomes 503 and a timeout 504, never an exception.

        A request that cannot be sent as stored (a line break in a header, an invalid escape
        in the path) is answered 400 without calling anything, as the gateway would answer it.
        """
        started = time.perf_counter()
        try:
            response = await self.client.request(
                request.method, request.request_target(), request_headers(request), request.body
            )
        except TimeoutError:
            elapsed = time.perf_counter() - started
            return Result(TIMEOUT_STATUS, (), b"", elapsed, f"no answer within {self._timeout_s:g}s")
        except (InvalidRequest, URLError) as exc:
            return Result(INVALID_REQUEST_STATUS, (), b"", time.perf_counter() - started, str(exc))
        except (OSError, ProtocolError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Result(TRANSPORT_FAILURE_STATUS, (), b"", time.perf_counter() - started, detail)
        return Result(response.status, response.headers, response.body, time.perf_counter() - started)
