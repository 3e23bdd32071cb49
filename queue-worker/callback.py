"""Post the function's result to the caller's callback URL."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .callback_guard import Allowlist, CallbackRefused, guarded_resolver
from .headers import basic_authorization, forwardable
from .invoke import Result
from .origin_client import OriginClient, ProtocolError, Response

#: Receivers whose connections are kept; the least recently used beyond this are closed.
MAX_ORIGINS = 64

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


class CallbackClient:
    """POSTs to callback URLs: kept-alive connections per receiver, addresses guarded, no
    redirects followed (a receiver's redirect is its answer)."""

    def __init__(self, *, allowlist: Allowlist, timeout_s: float, user_agent: str, max_idle: int, verify: bool) -> None:
        self._resolve = guarded_resolver(allowlist)
        self._timeout_s = timeout_s
        self._user_agent = user_agent
        self._max_idle = max_idle
        self._verify = verify
        self._origins: OrderedDict[str, OriginClient] = OrderedDict()

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """POST ``body`` to ``url``; credentials in the URL become basic auth, as Go sends them.

        Raises:
            CallbackRefused: the host resolves only to forbidden addresses.
            ValueError: not an http or https URL, or a header that cannot be sent.
            TimeoutError, OSError, ProtocolError: as :meth:`OriginClient.request`.
        """
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        client = self._origins.get(origin)
        if client is None:
            client = self._origins[origin] = OriginClient(
                origin,
                timeout_s=self._timeout_s,
                user_agent=self._user_agent,
                max_idle=self._max_idle,
                resolve=self._resolve,
                verify=self._verify,
            )
            if len(self._origins) > MAX_ORIGINS:
                self._origins.popitem(last=False)[1].close()
        else:
            self._origins.move_to_end(origin)
        if parts.username is not None and not any(name.lower() == "authorization" for name, _ in headers):
            authorization = basic_authorization(unquote(parts.username), unquote(parts.password or ""))
            headers = [*headers, ("Authorization", authorization)]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return await client.request("POST", target, headers, body)

    def close(self) -> None:
        """Close every receiver's connections."""
        for client in self._origins.values():
            client.close()
        self._origins.clear()


async def post_callback(client: CallbackClient, url: str, result: Result, info: CallbackInfo) -> Delivery:
    """POST the result; never raises for a network failure, a timeout or a bad URL."""
    try:
        response = await client.post(url, callback_headers(result, info), result.body)
    except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
        refused = isinstance(exc, CallbackRefused)
        return Delivery(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, refused)
    return Delivery(response.status)
