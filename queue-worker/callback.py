"""Post the function's result to the caller's callback URL."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .callback_guard import CallbackRefused
from .invoke import Result
from .transport import forwardable

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
    user_agent: str
    #: Set for a call that was never invoked (``cancelled``); else derived from the status.
    state: str = ""


def callback_headers(result: Result, info: CallbackInfo) -> list[tuple[str, str]]:
    """The function's response headers (minus hop-by-hop ones), then this worker's own."""
    headers = [(k, v) for k, v in forwardable(result.headers) if k.lower() not in OWN_HEADERS]
    if info.call_id:
        headers.append(("X-Call-Id", info.call_id))
    headers += [
        ("X-Call-Status", info.state or final_state(result.status)),
        ("X-Function-Status", str(result.status)),
        ("X-Function-Name", info.function),
        ("X-Duration-Seconds", f"{result.duration_s:f}"),
        ("X-Retry", str(info.retries)),
        ("X-Retry-Max", str(info.max_retries)),
        ("User-Agent", info.user_agent),
    ]
    return headers


def final_state(status: int) -> str:
    """``succeeded`` for a 2xx or 3xx answer, else ``failed``."""
    return "succeeded" if 200 <= status < 400 else "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a callback went: the receiver's status, or an error when there was none."""

    status: int | None
    error: str = ""
    #: The destination was refused (it resolved to a forbidden address): never retried.
    refused: bool = False

    @property
    def ok(self) -> bool:
        """Whether the receiver answered with a status below 500."""
        return self.status is not None and self.status < 500


async def post_callback(session: aiohttp.ClientSession, url: str, result: Result, info: CallbackInfo) -> Delivery:
    """POST the result; never raises for a network failure, a timeout or a bad URL.

    Redirects are not followed: a receiver's redirect is its answer.
    """
    try:
        async with session.post(
            url, data=result.body, headers=callback_headers(result, info), allow_redirects=False
        ) as response:
            await response.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        refused = isinstance(getattr(exc, "os_error", None), CallbackRefused)
        return Delivery(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, refused)
    return Delivery(response.status)
