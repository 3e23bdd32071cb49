"""The one seam between the worker and HTTP: a :class:`Transport` sends a request and returns a
:class:`Response`, or raises a :class:`TransportError` when there is no response to return.

Invocations, callbacks and the front door's existence check all go through it, so a test can
run the whole worker in process on a :class:`MockTransport` (the idea of httpx's), and a
different client needs changing in one place. :mod:`.http` is the real one.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP response: status, fields in the order received, and the body."""

    status: int
    headers: Headers = ()
    body: bytes = b""

    def header_map(self) -> dict[str, str]:
        """Header fields with lower-case names (the last value of a repeated one)."""
        return {name.lower(): value for name, value in self.headers}


@dataclass(frozen=True, slots=True)
class Request:
    """What was asked of a transport (recorded by :class:`MockTransport`)."""

    method: str
    url: str
    headers: Headers
    body: bytes


class TransportError(Exception):
    """No response came back; the subclasses say why."""


class InvalidRequest(TransportError, ValueError):
    """Refused before anything was sent: a field or target that would change the request's meaning."""


class DestinationRefused(TransportError):
    """The destination resolves only to addresses that may not be connected to."""


class ConnectFailed(TransportError):
    """No connection could be made, so nothing was sent."""


class ConnectionBroken(TransportError):
    """The connection failed after the request was sent: the peer may have received it."""


class ProtocolError(TransportError):
    """The answer was not valid HTTP/1.1, or ended before it was complete."""


class TransportTimeout(TransportError, TimeoutError):
    """No complete response within the transport's timeout."""


class Transport(Protocol):
    """Sends one request to an absolute ``http://`` or ``https://`` URL."""

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        """The whole response.

        Raises:
            TransportError: no response (one of its subclasses).
        """
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


Handler = Callable[[Request], Response | Awaitable[Response]]


@dataclass
class MockTransport:
    """A transport that answers from ``handler`` (which may raise a :class:`TransportError`)
    and keeps every request it was given, for tests."""

    handler: Handler
    requests: list[Request] = field(default_factory=list)
    closed: bool = False

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        request = Request(method, url, tuple(headers), body)
        self.requests.append(request)
        answer = self.handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    def close(self) -> None:
        self.closed = True
