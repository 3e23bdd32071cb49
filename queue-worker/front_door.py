"""The async front door: enqueue like the gateway's ``/async-function/`` route, look up, cancel.

``POST /async-function/{name}[/{path}]`` stores a ``QueueRequest`` exactly as the gateway would
and answers 202 with ``X-Call-Id`` (generated when the caller sent none). The call id is the
message's ``Nats-Msg-Id``, so the same call submitted twice within the stream's duplicate window
is stored once. ``GET /async-function/{call-id}`` answers the call's status as JSON, and
``DELETE /async-function/{call-id}`` cancels a call that has not finished: it is not invoked
again, and its callback says so. Served on ``port``, so also through the gateway at
``/function/queue-worker/async-function/...``.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import quote

import nats.errors
from aiohttp import web

from runtime import Context, NotConnected, describe

from .callbacks.guard import Undeliverable, check
from .settings import WorkerSettings
from .status.cancellations import Cancellations
from .status.state import FINAL
from .status.store import CallStatus
from .transport import Transport, TransportError
from .transport.headers import basic_authorization, canonical_header
from .wire.gourl import URLError, parse
from .wire.queue_request import QueueRequest, encode
from .wire.target import InvalidTarget

#: Room the stream needs besides the message itself (the Nats-Msg-Id header and framing).
HEADER_ROOM = 512
#: A call id is also the message's ``Nats-Msg-Id`` and a status key: visible ASCII, bounded.
CALL_ID = re.compile(r"[!-~]{1,256}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FunctionCheck:
    """Asks the gateway whether a function exists, remembering answers for a few seconds."""

    transport: Transport
    gateway_url: str
    credentials: tuple[str, str] | None
    ttl_s: float
    known: dict[str, tuple[bool, float]] = field(default_factory=dict)

    async def exists(self, function: str) -> bool:
        """Whether the gateway knows ``function`` (``name`` or ``name.namespace``).

        Raises:
            GatewayUnavailable: the gateway could not be asked, or answered neither 200 nor 404.
        """
        cached = self.known.get(function)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        name, _, namespace = function.partition(".")
        target = f"/system/function/{quote(name, safe='')}" + (f"?namespace={quote(namespace)}" if namespace else "")
        headers = [("Authorization", basic_authorization(*self.credentials))] if self.credentials else []
        try:
            response = await self.transport.request("GET", self.gateway_url + target, headers, b"")
        except TransportError as exc:
            raise GatewayUnavailable(describe(exc)) from exc
        if response.status not in (200, 404):
            raise GatewayUnavailable(f"status {response.status}")
        found = response.status == 200
        self.known[function] = (found, time.monotonic() + self.ttl_s)
        return found

    def close(self) -> None:
        self.transport.close()


class GatewayUnavailable(Exception):
    """The gateway could not say whether a function exists."""


class Refused(ValueError):
    """A request the front door will not store; ``status`` is the HTTP answer (400 or 431)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def queued_request(
    *,
    name: str,
    path: str,
    method: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    host: str,
    settings: WorkerSettings,
    now_ns: int | None = None,
) -> QueueRequest:
    """The ``QueueRequest`` the gateway would store for this call (without its body). Pure.

    Anything the worker would refuse later is refused here, naming the reason: a function name
    or path that leaves ``/function/<name>``, a call id that cannot be a message id, a callback
    URL that nothing may be posted to, headers over the limits as they will be stored.

    Raises:
        Refused: with the status to answer.
    """
    header: dict[str, list[str]] = {}
    for key, value in headers:
        # The credentials this door checked are its own: they never travel on to a function.
        if settings.front_door_credentials is None or key.lower() != "authorization":
            header.setdefault(canonical_header(key), []).append(value)
    call_id = header.get("X-Call-Id", [""])[0] or str(uuid.uuid4())
    if CALL_ID.fullmatch(call_id) is None:
        raise Refused(400, "X-Call-Id: expected 1 to 256 visible ASCII characters")
    header["X-Call-Id"] = [call_id]
    header.setdefault("X-Start-Time", []).append(str(time.time_ns() if now_ns is None else now_ns))
    # Counted as stored, the way the worker counts them.
    problem = settings.limits.header_problem(header)
    if problem is not None:
        raise Refused(431, problem)
    callback = None
    if "X-Callback-Url" in header:
        try:
            callback = parse(header["X-Callback-Url"][0])
            check(settings.callback_allowlist, callback.string())
        except (URLError, Undeliverable) as exc:
            raise Refused(400, f"X-Callback-Url: {exc}") from None
    try:
        return QueueRequest(
            function=name,
            method=method,
            path=path,
            query_string=query,
            header={k: tuple(v) for k, v in header.items()},
            host=host,
            callback=callback,
        )
    except InvalidTarget as exc:
        raise Refused(400, str(exc)) from None


def _http_error(refused: Refused) -> web.HTTPException:
    if refused.status == 431:
        return web.HTTPRequestHeaderFieldsTooLarge(text=str(refused))
    return web.HTTPBadRequest(text=str(refused))


class FrontDoor:
    """The routes and what they share."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        context: Context,
        status: CallStatus,
        cancellations: Cancellations,
        check: FunctionCheck | None,
    ) -> None:
        self._settings = settings
        self._context = context
        self._status = status
        self._cancellations = cancellations
        self._check = check

    def close(self) -> None:
        """Close the existence check's connections."""
        if self._check is not None:
            self._check.close()

    def routes(self) -> list[web.AbstractRouteDef]:
        """The aiohttp routes, behind basic auth when it is configured."""
        guard = self._guarded
        return [
            web.post("/async-function/{name:[^/]+}", guard(self.enqueue)),
            web.post("/async-function/{name:[^/]+}/{path:.*}", guard(self.enqueue)),
            web.get("/async-function/{call_id}", guard(self.lookup)),
            web.delete("/async-function/{call_id}", guard(self.cancel)),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        credentials = self._settings.front_door_credentials
        if credentials is None:
            return handler
        expected = basic_authorization(*credentials)

        async def guarded(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="queue-worker"'})
            return await handler(request)

        return guarded

    async def enqueue(self, request: web.Request) -> web.Response:
        """Store the request as the gateway would, and answer 202 only once the stream has it."""
        try:
            queued = queued_request(
                name=request.match_info["name"],
                path="/" + request.match_info["path"] if "path" in request.match_info else "",
                method=request.method,
                query=request.query_string,
                headers=request.headers.items(),
                host=request.host,
                settings=self._settings,
            )
        except Refused as exc:
            raise _http_error(exc) from None
        limit = self._limit()
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        await self._require_function(queued.function)
        data = encode(replace(queued, body=await request.read()))
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        await self._store(queued.call_id, queued.function, data)
        start = queued.header_value("X-Start-Time")
        return web.Response(status=202, headers={"X-Call-Id": queued.call_id, "X-Start-Time": start})

    def _limit(self) -> int:
        try:
            server = self._context.nats().max_payload - HEADER_ROOM
        except NotConnected:
            raise web.HTTPServiceUnavailable(text="not connected to NATS") from None
        configured = self._settings.limits.max_body
        return min(configured, server) if configured else server

    async def _require_function(self, name: str) -> None:
        if self._check is None:
            return
        try:
            found = await self._check.exists(name)
        except GatewayUnavailable:
            raise web.HTTPServiceUnavailable(text="cannot ask the gateway whether the function exists") from None
        if not found:
            raise web.HTTPNotFound(text=f"no function {name}")

    async def _store(self, call_id: str, function: str, data: bytes) -> None:
        """Record the call, then publish it; a 503 unless the stream confirmed it."""
        try:
            client = self._context.nats()
            await self._status.create(client, call_id, function, queuedAt=time.time())
            await client.jetstream().publish(
                self._context.settings.queue_name, data, headers={"Nats-Msg-Id": call_id}, timeout=5
            )
        except (NotConnected, nats.errors.Error, TimeoutError) as exc:
            self._context.log.warning("Cannot queue", function=function, callId=call_id, error=describe(exc))
            raise web.HTTPServiceUnavailable(text="the queue cannot be written now; nothing was stored") from None

    async def lookup(self, request: web.Request) -> web.Response:
        """The call's last recorded status as JSON, or 404."""
        status = await self._read(request.match_info["call_id"])
        if status is None:
            raise web.HTTPNotFound(text="no such call")
        return web.json_response(status)

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a call that has not finished: 202; 404 when unknown; 409 when it already ended."""
        call_id = request.match_info["call_id"]
        status = await self._read(call_id)
        if status is None:
            raise web.HTTPNotFound(text="no such call")
        if status.get("state") in FINAL:
            raise web.HTTPConflict(text=json.dumps(status), content_type="application/json")
        try:
            client = self._context.nats()
            await self._cancellations.cancel(client, call_id)
            await self._status.mark_cancelled(client, call_id, str(status.get("function", "")))
        except (NotConnected, nats.errors.Error, TimeoutError):
            raise web.HTTPServiceUnavailable(text="cannot record the cancellation now") from None
        return web.Response(status=202, headers={"X-Call-Id": call_id})

    async def _read(self, call_id: str) -> dict[str, object] | None:
        if CALL_ID.fullmatch(call_id) is None:
            raise web.HTTPBadRequest(text="expected a call id of 1 to 256 visible ASCII characters")
        if not self._status.enabled:
            raise web.HTTPNotFound(text="call status is off (call_status_ttl=0s)")
        try:
            found = await self._status.read(self._context.nats(), call_id)
        except (NotConnected, nats.errors.Error, TimeoutError):
            raise web.HTTPServiceUnavailable(text="cannot read call status now") from None
        return dict(found) if found is not None else None
