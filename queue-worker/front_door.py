"""The async front door: enqueue like the gateway's ``/async-function/`` route, look up, cancel.

``POST /async-function/{name}[/{path}]`` stores a ``QueueRequest`` exactly as the gateway would
and answers 202 with ``X-Call-Id`` (generated when the caller sent none). The call id is the
message's ``Nats-Msg-Id``, so the same call submitted twice within the stream's duplicate window
is stored once. ``GET /async-function/{call-id}`` answers the call's status as JSON, and
``DELETE /async-function/{call-id}`` cancels a call that has not finished. Served on ``port``,
so also through the gateway at ``/function/queue-worker/async-function/...``.

What a cancel can stop is what has not started: a call is never invoked after its DELETE is
answered, except for an attempt already under way, which no one can stop through the gateway.

- ``queued``: 202; the worker that takes it posts the callback (``X-Call-Status: cancelled``,
  ``X-Function-Status: 0``) instead of invoking it.
- ``running``: 202; the attempt finishes and its result stands if it is final (``succeeded``,
  or ``failed`` with a status not retried); a retry it would have had becomes ``cancelled``,
  and the callback carries that attempt's status and body.
- ``waiting`` for a retry: 200; the message is taken out of the stream and the callback posted
  at once, unless the attempt is due within :data:`WITHDRAW_MARGIN_S` (then as ``queued``).
- finished: 409, with the status.

Until a worker acts on it, GET answers the call's state with ``"cancelRequested": true``; it
says ``cancelled`` only once nothing more will run.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from urllib.parse import quote

import nats.errors
from aiohttp import web
from opentelemetry.trace import Span, SpanKind

from runtime import MAX_INFLIGHT_HEADER, Context, NotConnected, describe, function_subject
from runtime.numbers import ascii_int_or_none

from . import tracing
from .callbacks.guard import Undeliverable, check
from .retry import ANNOTATION_PREFIX
from .settings import WorkerSettings
from .status.cancellations import Cancellations
from .status.state import FINAL, CallState, Record
from .status.store import CallStatus
from .transport import Transport, TransportError
from .transport.headers import basic_authorization, canonical_header
from .wire.gourl import URLError, parse
from .wire.queue_request import QueueRequest, encode
from .wire.target import InvalidTarget

#: Functions whose answers are remembered at once; past this the memory starts afresh (the
#: names come from callers, so they must not grow it without bound).
MAX_KNOWN_FUNCTIONS = 4096
#: A function's cap on calls at once in function mode (a plus on the adaptive limit, never more).
MAX_INFLIGHT_ANNOTATION = "com.openfaas.queue.max_inflight"
#: Longest the gateway is waited for when asked about a function: the caller is waiting too.
LOOKUP_TIMEOUT_S = 5.0
#: Room the stream needs besides the message itself (the Nats-Msg-Id header and framing).
HEADER_ROOM = 512
#: A waiting call due sooner than this is left to the worker that takes it, so a withdrawal
#: never races a delivery that is starting.
WITHDRAW_MARGIN_S = 1.0
#: A call id is also the message's ``Nats-Msg-Id`` and a status key: visible ASCII, bounded.
CALL_ID = re.compile(r"[!-~]{1,256}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Takes a waiting call's message out of the stream and settles it as cancelled (the worker's).
Withdraw = Callable[[str, int, int, Context], Awaitable[Record | None]]


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """What the gateway says of a function: whether it exists, its retry annotations, and how
    many of its calls may run at once in function mode (``com.openfaas.queue.max_inflight``)."""

    found: bool
    retry_annotations: Mapping[str, str] = field(default_factory=dict)
    max_inflight: int | None = None


def function_info(status: int, body: bytes) -> FunctionInfo:
    """Read the gateway's answer to ``GET /system/function/<name>``. Pure.

    Only ``com.openfaas.retry.*`` annotations are kept: they are what the worker reads from a
    request, as the OpenFaaS Pro gateway stores them; the rest stay with the gateway.

    Raises:
        GatewayUnavailable: neither 200 nor 404, or a 200 that is not a function's status.
    """
    if status == 404:
        return FunctionInfo(found=False)
    if status != 200:
        raise GatewayUnavailable(
            f"status {status}" + (" (the gateway wants credentials)" if status in (401, 403) else "")
        )
    try:
        annotations = json.loads(body).get("annotations") or {}
        kept = {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX) and isinstance(v, str)}
        cap = annotations.get(MAX_INFLIGHT_ANNOTATION)
    except (ValueError, AttributeError) as exc:
        raise GatewayUnavailable(f"not a function's status: {exc}") from None
    # An invalid cap is no cap: the adaptive limit still keeps the function from being flooded.
    ceiling = ascii_int_or_none(cap.strip(), max_digits=6) if isinstance(cap, str) else None
    return FunctionInfo(found=True, retry_annotations=kept, max_inflight=ceiling or None)


@dataclass
class Functions:
    """Asks the gateway about functions, remembering each answer (or failure) for ``ttl_s``."""

    transport: Transport
    gateway_url: str
    credentials: tuple[str, str] | None
    ttl_s: float
    known: dict[str, tuple[FunctionInfo | GatewayUnavailable, float]] = field(default_factory=dict)

    async def info(self, function: str) -> FunctionInfo:
        """What the gateway says of ``function`` (``name`` or ``name.namespace``).

        Raises:
            GatewayUnavailable: the gateway could not be asked or gave no usable answer (a
                failure is remembered too, so a gateway that is down costs one wait per ttl).
        """
        cached = self.known.get(function)
        if cached is None or cached[1] <= time.monotonic():
            cached = (await self._ask(function), time.monotonic() + self.ttl_s)
            if len(self.known) >= MAX_KNOWN_FUNCTIONS:
                self.known.clear()
            self.known[function] = cached
        if isinstance(cached[0], GatewayUnavailable):
            raise cached[0]
        return cached[0]

    async def _ask(self, function: str) -> FunctionInfo | GatewayUnavailable:
        name, _, namespace = function.partition(".")
        target = f"/system/function/{quote(name, safe='')}" + (f"?namespace={quote(namespace)}" if namespace else "")
        headers = [("Authorization", basic_authorization(*self.credentials))] if self.credentials else []
        try:
            response = await self.transport.request("GET", self.gateway_url + target, headers, b"")
            return function_info(response.status, response.body)
        except TransportError as exc:
            return GatewayUnavailable(describe(exc))
        except GatewayUnavailable as exc:
            return exc

    def close(self) -> None:
        self.transport.close()


class GatewayUnavailable(Exception):
    """The gateway could not say whether a function exists, or what its annotations are."""


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
        functions: Functions | None,
        withdraw: Withdraw,
    ) -> None:
        self._withdraw = withdraw
        self._settings = settings
        self._context = context
        self._status = status
        self._cancellations = cancellations
        self._functions = functions
        #: When the last "cannot read annotations" warning was logged (monotonic), to log one a minute.
        self._warned_at = -60.0

    def close(self) -> None:
        """Close the gateway lookups' connections."""
        if self._functions is not None:
            self._functions.close()

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
        queued, info = await self._ask_gateway(queued)
        with self._send_span(queued) as span:
            if span is not None:
                # The stored context names this span, so every attempt nests under it.
                trace_headers = tracing.injected(span)
                header = {k: v for k, v in queued.header.items() if k.lower() not in tracing.TRACE_HEADERS}
                queued = replace(queued, header={**header, **{k: (v,) for k, v in trace_headers}})
            data = encode(replace(queued, body=await request.read()))
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            await self._store(queued.call_id, queued.function, data, info)
        answer = {"X-Call-Id": queued.call_id, "X-Start-Time": queued.header_value("X-Start-Time")}
        if span is not None:
            answer["traceparent"] = queued.header_value("traceparent")
        return web.Response(status=202, headers=answer)

    def _send_span(self, queued: QueueRequest) -> AbstractContextManager[Span | None]:
        """The producer span of storing the call, under the caller's trace (or a new one)."""
        if not tracing.enabled():
            return tracing.NO_SPAN
        subject = self._subject(queued.function)
        attributes: dict[str, str] = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": subject,
            "messaging.message.id": queued.call_id,
            "faas.invoked_name": queued.function,
        }
        return tracing.tracer().start_as_current_span(
            f"send {subject}",
            context=tracing.parent(queued.header_value("traceparent"), queued.header_value("tracestate")),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )

    def _subject(self, function: str) -> str:
        """Where a call to ``function`` is stored: in function mode its own subject,
        ``<queue_name>.<name>.<namespace>``, else (or for a name no subject can hold) the queue's."""
        settings = self._context.settings
        if not settings.function_mode:
            return settings.queue_name
        return function_subject(settings.queue_name, function, self._settings.function_namespace) or settings.queue_name

    def _limit(self) -> int:
        try:
            server = self._context.nats().max_payload - HEADER_ROOM
        except NotConnected:
            raise web.HTTPServiceUnavailable(text="not connected to NATS") from None
        configured = self._settings.limits.max_body
        return min(configured, server) if configured else server

    async def _ask_gateway(self, queued: QueueRequest) -> tuple[QueueRequest, FunctionInfo | None]:
        """Refuse an unknown function (``check_function_exists``) and store the function's
        retry annotations in the request (``retry_annotations``), as the Pro gateway does;
        returns the request and what the gateway said (``None`` if it was not asked)."""
        if self._functions is None:
            return queued, None
        try:
            info = await self._functions.info(queued.function)
        except GatewayUnavailable as exc:
            if self._settings.check_function_exists:
                raise web.HTTPServiceUnavailable(text="cannot ask the gateway whether the function exists") from None
            # Async work is not refused for want of annotations; the operator is told how often it happens.
            if time.monotonic() - self._warned_at >= 60:
                self._warned_at = time.monotonic()
                self._context.log.warning(
                    "Cannot read function annotations; queued with the worker's retry settings",
                    function=queued.function,
                    error=str(exc),
                    hint="check gateway_url; mount basic-auth-user and basic-auth-password if the gateway wants them",
                )
            return queued, None
        if not info.found and self._settings.check_function_exists:
            raise web.HTTPNotFound(text=f"no function {queued.function}")
        if info.retry_annotations and self._settings.retry_annotations:
            return replace(queued, annotations=info.retry_annotations), info
        return queued, info

    async def _store(self, call_id: str, function: str, data: bytes, info: FunctionInfo | None) -> None:
        """Record the call, then publish it; a 503 unless the stream confirmed it. In function
        mode the message carries the function's cap on calls at once, if it has one."""
        headers = {"Nats-Msg-Id": call_id}
        if info is not None and info.max_inflight and self._context.settings.function_mode:
            headers[MAX_INFLIGHT_HEADER] = str(info.max_inflight)
        try:
            client = self._context.nats()
            await self._status.create(client, call_id, function, queuedAt=time.time())
            await client.jetstream().publish(self._subject(function), data, headers=headers, timeout=5)
        except (NotConnected, nats.errors.Error, TimeoutError) as exc:
            self._context.log.warning("Cannot queue", function=function, callId=call_id, error=describe(exc))
            raise web.HTTPServiceUnavailable(text="the queue cannot be written now; nothing was stored") from None

    async def lookup(self, request: web.Request) -> web.Response:
        """The call's last recorded status as JSON, or 404."""
        call_id = request.match_info["call_id"]
        status = await self._read(call_id)
        if status is None:
            raise web.HTTPNotFound(text="no such call")
        if call_id in self._cancellations and status.get("state") not in FINAL:
            status["cancelRequested"] = True
        return web.json_response(status)

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a call that has not finished (see the module's docstring for what that stops):
        200 when it is cancelled now, 202 when the worker that has it will; 404 when unknown;
        409 when it already ended."""
        call_id = request.match_info["call_id"]
        status = await self._read(call_id)
        if status is None:
            raise web.HTTPNotFound(text="no such call")
        if status.get("state") in FINAL:
            raise web.HTTPConflict(text=json.dumps(status), content_type="application/json")
        headers = {"X-Call-Id": call_id}
        try:
            await self._cancellations.cancel(self._context.nats(), call_id)
            withdrawn = await self._withdraw_waiting(call_id, status)
        except (NotConnected, nats.errors.Error, TimeoutError):
            raise web.HTTPServiceUnavailable(text="cannot record the cancellation now") from None
        if withdrawn is not None:
            body = {"callId": call_id, "function": withdrawn.function, "state": withdrawn.state, **withdrawn.fields}
            return web.json_response(body, headers=headers)
        return web.json_response({**status, "cancelRequested": True}, status=202, headers=headers)

    async def _withdraw_waiting(self, call_id: str, status: dict[str, object]) -> Record | None:
        """Settle a call waiting for a retry now, rather than at its next attempt."""
        seq, attempts, due = status.get("seq"), status.get("attempt"), status.get("nextAttemptAt")
        if status.get("state") != CallState.WAITING or not isinstance(seq, int) or not isinstance(attempts, int):
            return None
        if not isinstance(due, int | float) or due - time.time() < WITHDRAW_MARGIN_S:
            return None
        return await self._withdraw(call_id, seq, attempts, self._context)

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
