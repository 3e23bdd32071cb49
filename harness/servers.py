"""Real HTTP servers on loopback: the gateway's ``/function/`` route and a callback receiver."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from .ports import free_port

#: A function: takes the request, returns the response.
Behaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """One request a server received."""

    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float
    #: The client's address and port: one per connection.
    peer: str = ""

    def header(self, name: str) -> str | None:
        """The first value of a header, or ``None``."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def echo(request: web.Request, body: bytes) -> web.Response:
    """Answer 200 with the request body and a marker header."""
    return web.Response(body=body, headers={"X-Echo": "yes", "Content-Type": "application/octet-stream"})


def answer(status: int, text: str = "", headers: dict[str, str] | None = None, *, after_s: float = 0.0) -> Behaviour:
    """A behaviour that always answers ``status`` with ``text``, ``after_s`` seconds late."""

    async def behaviour(request: web.Request, body: bytes) -> web.Response:
        if after_s:
            await asyncio.sleep(after_s)
        return web.Response(status=status, text=text, headers=headers)

    return behaviour


@dataclass
class RecordingServer:
    """An aiohttp server that records every request and answers by behaviour.

    ``behaviours`` maps a function name (the segment after ``/function/``) to a behaviour;
    any other path is answered by ``default``.
    """

    default: Behaviour = echo
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    #: The gateway's API (``/system/...``): its calls are kept apart, answered by ``system`` if
    #: set, else as a gateway that knows every function, with ``annotations`` by function name.
    system_calls: list[Call] = field(default_factory=list)
    system: Behaviour | None = None
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> RecordingServer:
        """Start serving (over TLS with ``ssl_context``)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context).start()
        return self

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        system = request.path.startswith("/system/")
        (self.system_calls if system else self.calls).append(
            Call(
                request.method,
                request.path_qs,
                tuple(request.headers.items()),
                body,
                time.monotonic(),
                f"{peer[0]}:{peer[1]}" if peer else "",
            )
        )
        self._changed.set()
        if system:
            return await (self.system or self._system)(request, body)
        parts = request.path.split("/")
        name = parts[2] if len(parts) > 2 and parts[1] == "function" else ""
        return await self.behaviours.get(name, self.default)(request, body)

    async def _system(self, request: web.Request, body: bytes) -> web.Response:
        """``GET /system/function/<name>`` as the gateway answers it: every function exists,
        with the annotations ``annotations`` gives it."""
        name = request.path.rsplit("/", 1)[1]
        status = {"name": name, "namespace": request.query.get("namespace", "openfaas-fn"), "replicas": 1}
        return web.json_response({**status, "annotations": self.annotations.get(name, {})})

    def calls_to(self, function: str) -> list[Call]:
        """Calls whose path is ``/function/<function>/...``."""
        prefix = f"/function/{function}/"
        return [c for c in self.calls if c.path_qs.startswith(prefix) or c.path_qs == prefix.rstrip("/")]

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Call]:
        """Wait until at least ``count`` requests arrived; raise on timeout."""
        await wait_until(lambda: len(self.calls) >= count, timeout_s, f"{count} requests (have {len(self.calls)})")
        return list(self.calls)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms until it holds; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)
