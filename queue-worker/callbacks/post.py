"""Post the function's result to the caller's callback URL."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Span

from runtime import describe

from ..invoke import Invocation
from ..status.state import CallState, state_of_status
from ..tracing import with_trace
from ..transport import DestinationRefused, Transport, TransportError
from ..transport.headers import basic_authorization, forwardable
from .guard import Destination

#: Headers this worker sets on every callback, replacing any the function returned.
OWN_HEADERS = (
    "x-call-id",
    "x-call-status",
    "x-function-status",
    "x-function-name",
    "x-duration-seconds",
    "x-retry",
    "x-retry-max",
    "user-agent",
)


@dataclass(frozen=True, slots=True)
class CallbackInfo:
    """What the callback reports besides the function's own response."""

    call_id: str
    function: str
    retries: int
    max_retries: int
    #: Set for a call that was never invoked (``cancelled``); else derived from the status.
    state: CallState | None = None


def callback_headers(invocation: Invocation, info: CallbackInfo) -> list[tuple[str, str]]:
    """The function's response headers (minus hop-by-hop ones), then this worker's own
    (``User-Agent`` is the transport's)."""
    response = invocation.response
    headers = [(k, v) for k, v in forwardable(response.headers) if k.lower() not in OWN_HEADERS]
    if info.call_id:
        headers.append(("X-Call-Id", info.call_id))
    headers += [
        ("X-Call-Status", info.state or state_of_status(response.status)),
        ("X-Function-Status", str(response.status)),
        ("X-Function-Name", info.function),
        ("X-Duration-Seconds", f"{invocation.duration_s:f}"),
        ("X-Retry", str(info.retries)),
        ("X-Retry-Max", str(info.max_retries)),
    ]
    return headers


@dataclass(frozen=True, slots=True)
class Posted:
    """How a callback went: the receiver's status, or an error when there was none."""

    status: int | None
    error: str = ""
    #: The destination was refused (not allowed, or resolves to a forbidden address): never retried.
    refused: bool = False

    @property
    def ok(self) -> bool:
        """Whether the receiver answered with a status below 500."""
        return self.status is not None and self.status < 500


async def post_callback(
    transport: Transport, destination: Destination, invocation: Invocation, info: CallbackInfo, span: Span | None = None
) -> Posted:
    """POST the result once; never raises. Credentials in the URL become basic auth, as Go
    sends them; no redirect is followed (a receiver's redirect is its answer)."""
    headers = with_trace(callback_headers(invocation, info), span)
    if destination.username is not None and not any(name.lower() == "authorization" for name, _ in headers):
        headers.append(("Authorization", basic_authorization(destination.username, destination.password or "")))
    try:
        response = await transport.request(
            "POST", destination.origin + destination.target, headers, invocation.response.body
        )
    except TransportError as exc:
        return Posted(None, describe(exc), refused=isinstance(exc, DestinationRefused))
    return Posted(response.status)
