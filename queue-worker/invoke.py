"""Call the function through the gateway with what the message stored."""

from __future__ import annotations

import time
from typing import NamedTuple

from opentelemetry.trace import Span

from runtime import describe

from .tracing import with_trace
from .transport import InvalidRequest, Response, Transport, TransportError, TransportTimeout
from .transport.headers import forwardable
from .wire.gourl import URLError
from .wire.queue_request import QueueRequest

#: Status recorded when the gateway cannot be reached at all, or the connection broke.
TRANSPORT_FAILURE_STATUS = 503
#: Status recorded when the call outlives ``upstream_timeout``.
TIMEOUT_STATUS = 504
#: Status recorded when the stored request cannot be sent as it is.
INVALID_REQUEST_STATUS = 400


class Invocation(NamedTuple):
    """What one invocation produced; ``error`` is set when no HTTP response came back (the
    response is then the status recorded for the failure, with no headers or body)."""

    response: Response
    duration_s: float
    error: str = ""

    @property
    def status(self) -> int:
        return self.response.status


def request_headers(request: QueueRequest) -> list[tuple[str, str]]:
    """Every stored header value, in order, minus those that must not be forwarded."""
    return forwardable((name, value) for name, values in request.header.items() for value in values)


def failure_status(error: TransportError) -> int:
    """The status an invocation records when no response came back."""
    if isinstance(error, TransportTimeout):
        return TIMEOUT_STATUS
    if isinstance(error, InvalidRequest):
        return INVALID_REQUEST_STATUS
    return TRANSPORT_FAILURE_STATUS


class Invoker:
    """Invokes functions at ``{gateway_url}/function/...`` through ``transport``."""

    def __init__(self, *, transport: Transport, gateway_url: str) -> None:
        self.transport = transport
        self._gateway_url = gateway_url.rstrip("/")

    def url(self, request: QueueRequest) -> str:
        """The full URL the function is called at.

        Raises:
            URLError: Go could not have sent it (an invalid %-escape in the path).
        """
        return self._gateway_url + request.request_target()

    def shown_url(self, request: QueueRequest) -> tuple[str | None, str]:
        """:meth:`url`, or ``None`` when Go could not have sent it (which :meth:`invoke` answers
        400, unsent); and the URL to show for it, without its query: the path as stored when
        there is no URL. Never raises."""
        try:
            url = self.url(request)
        except URLError:
            return None, self._gateway_url + request.invoke_path().partition("?")[0]
        return url, url.partition("?")[0]

    async def invoke(self, request: QueueRequest, span: Span | None = None, url: str | None = None) -> Invocation:
        """Make the call; never raises for a failure to get an answer.

        A request that cannot be sent as stored (a line break in a header, an invalid escape
        in the path) is answered 400 without calling anything, as the gateway would answer it.
        With ``span`` (tracing on), the function gets ``traceparent`` naming it as the parent.
        ``url`` is :meth:`url`'s answer when the caller has made it already.
        """
        started = time.perf_counter()
        try:
            response = await self.transport.request(
                request.method, url or self.url(request), with_trace(request_headers(request), span), request.body
            )
        except URLError as exc:
            return _failed(INVALID_REQUEST_STATUS, started, str(exc))
        except TransportError as exc:
            return _failed(failure_status(exc), started, describe(exc))
        return Invocation(response, time.perf_counter() - started)


def _failed(status: int, started: float, error: str) -> Invocation:
    return Invocation(Response(status), time.perf_counter() - started, error)
