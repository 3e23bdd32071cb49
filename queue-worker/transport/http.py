"""The real :class:`~.Transport`: lean HTTP/1.1 over kept-alive connections, a pool per origin.

Why not aiohttp or httpx here: `make bench` measures aiohttp at about 60 µs of CPU per
request, more than half of what a whole message costs at full rate; this client spends about a
third of that (18 µs), and httpx's pool slows down as concurrency grows. It can be small
because its job is narrow: it forwards headers that were already filtered, follows no
redirects, uses no proxy and no cookie jar, and hands back bodies as they came (not
decompressed).

What is written by hand is only the pool, the deadline and the request's bytes. Responses are
framed by llhttp (through httptools, the parser under uvicorn and Node.js): 2.5 µs per typical
response against 5.0 µs for the hand-written parser this module had (same process, best of five;
`make bench` prints the figure), and stricter, refusing what RFC 9112
says to refuse (``Content-Length`` beside ``Transfer-Encoding``, differing lengths, bad chunk
sizes). :class:`ResponseParser` adds the two things llhttp leaves to its caller: a body that
ends when the connection closes, and the bodiless answer to ``HEAD``.

A request is sent again only when it certainly never reached the server, or is replayable as
Go's ``net/http`` decides (GET, HEAD, OPTIONS, TRACE, or an idempotency key): a POST on a reused
connection that the server closed without answering may have been taken, so it fails as
:class:`~.ConnectionBroken` and the caller's retry policy, visible in logs and metrics, decides
what follows.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from runtime import describe

from . import ConnectFailed, ConnectionBroken, InvalidRequest, ProtocolError, Response, TransportTimeout
from .deadlines import Deadlines
from .headers import TOKEN, UNSAFE_TARGET, sendable

#: Largest response head (status line and fields) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: Idle connections older than this are closed rather than reused: the older a connection,
#: the likelier its server is closing it just as a request goes out.
MAX_IDLE_S = 30.0
#: Origins whose connections are kept; the least recently used beyond this are closed.
MAX_ORIGINS = 64
#: Parsers kept for reuse between responses. A response is usually read in one step of the
#: loop, so few are ever in use at once, however many requests wait.
MAX_SPARE_PARSERS = 64
#: Methods sent again after a kept-alive connection closed without an answer: Go's
#: ``isReplayable`` (net/http), which also replays a request carrying an idempotency key.
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
IDEMPOTENCY_KEYS = frozenset({"idempotency-key", "x-idempotency-key"})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_NO_BODY_STATUSES = frozenset({204, 304})

#: Resolves a host and port to the addresses that may be connected to, in order of preference
#: (raising :class:`~.DestinationRefused` or ``OSError`` when there are none).
Resolve = Callable[[str, int], Awaitable[list[str]]]


def encode_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The bytes of a request's head, for ``body``: ``Host`` first, the given fields, then
    ``Content-Length``. The body goes after it as it is, never copied into one buffer with it:
    a call in flight would keep a second copy of its body.

    ``headers`` must not carry ``Host``, ``Content-Length`` or ``Transfer-Encoding``: the
    client frames the request itself.

    Raises:
        InvalidRequest: a field name is not a token, or a value holds CR, LF or NUL.
    """
    if TOKEN.fullmatch(method) is None or not target.startswith("/") or not UNSAFE_TARGET.isdisjoint(target):
        raise InvalidRequest(f"cannot send {method!r} {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers:
        if not sendable(name, value):
            raise InvalidRequest(f"header {name!r} cannot be sent as it is")
        lines.append(f"{name}: {value}\r\n")
    if body or method not in _BODYLESS_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    try:
        # As UTF-8, like Go and aiohttp: the gateway stored the bytes it received as JSON text,
        # and this gives them back.
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("a header holds a lone surrogate, which no bytes encode") from None


class Parsed(NamedTuple):
    """A complete response, and whether its connection may carry another request."""

    response: Response
    keep_alive: bool


class ResponseParser:
    """Reads one response after another from the bytes of one connection (llhttp callbacks)."""

    __slots__ = (
        "_beyond",
        "_body",
        "_done",
        "_head_bytes",
        "_head_request",
        "_headers",
        "_headers_complete",
        "_keep_alive",
        "_llhttp",
        "_until_close",
    )

    def __init__(self) -> None:
        self._llhttp = httptools.HttpResponseParser(self)
        self._head_request = False
        self._reset()

    def _reset(self) -> None:
        self._head_bytes = 0
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._until_close = False
        self._keep_alive = True
        self._done: Parsed | None = None
        self._headers_complete = False
        #: Bytes arrived past the end of the response: the two sides disagree on framing.
        self._beyond = False

    def expect(self, method: str) -> None:
        """Say which request the next response answers (a response to HEAD has no body)."""
        self._head_request = method == "HEAD"

    def feed(self, data: bytes) -> Parsed | None:
        """Take bytes; returns the response once it is complete.

        Raises:
            ProtocolError: the bytes are not a valid response.
        """
        if not self._headers_complete:
            self._head_bytes += len(data)
        try:
            self._llhttp.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ProtocolError("the server switched protocols") from None
        except httptools.HttpParserError as exc:
            if self._done is not None:
                self._beyond = True  # garbage after a complete response: it stands, the connection goes
                return self._take()
            cause = exc.__context__
            detail = str(cause) if isinstance(cause, ProtocolError) else f"invalid response: {exc}"
            raise ProtocolError(detail) from None
        if self._done is None:
            if self._head_bytes > MAX_HEAD_BYTES and not self._headers_complete:
                raise ProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return None
        return self._take()

    def _take(self) -> Parsed:
        done, beyond = self._done, self._beyond
        assert done is not None
        self._reset()
        return done._replace(keep_alive=False) if beyond else done

    def feed_eof(self) -> Parsed:
        """The connection closed: the response that this completes.

        Raises:
            ProtocolError: the response was not complete.
        """
        if self._until_close and self._done is None:
            done = self._complete(keep_alive=False)
            self._reset()
            return done
        raise ProtocolError("the connection closed before the response was complete")

    # llhttp's callbacks.

    def on_message_begin(self) -> None:
        if self._done is not None:
            self._beyond = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._llhttp.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols")
            self._headers = []  # an interim response: the real one follows
            return
        self._headers_complete = True
        self._keep_alive = self._llhttp.should_keep_alive()
        if self._head_request:
            # llhttp would wait for the body that Content-Length announces; HEAD has none. Done
            # here, and the connection is not reused, since llhttp's state is now out of step.
            self._complete(keep_alive=False)
            return
        if status not in _NO_BODY_STATUSES and not self._keep_alive:
            self._until_close = not self._framed()

    def _framed(self) -> bool:
        """Whether the body has a length of its own (else it ends when the connection closes)."""
        for name, value in self._headers:
            lower = name.lower()
            if lower == "content-length":
                return True
            if lower == "transfer-encoding" and value.rsplit(",", 1)[-1].strip().lower() == "chunked":
                return True
        return False

    def on_body(self, body: bytes) -> None:
        if self._done is None:
            self._body.append(bytes(body))

    def on_message_complete(self) -> None:
        if 100 <= self._llhttp.get_status_code() < 200 or self._done is not None:
            return
        self._until_close = False
        self._complete(keep_alive=self._keep_alive)

    def _complete(self, *, keep_alive: bool) -> Parsed:
        response = Response(self._llhttp.get_status_code(), tuple(self._headers), b"".join(self._body))
        self._done = Parsed(response, keep_alive)
        return self._done


class Parsers:
    """Parsers lent to connections while a response arrives, and kept between responses.

    A connection holds one only from the first byte of a response to its end, so a request
    waiting for a slow function holds none. A parser with llhttp's state under it is about a
    kilobyte: a call held in flight kept 12.3 KB of the worker's memory with a parser of its
    own, 11.3 KB without (`bench.limits.held_in_flight`, 5,000 calls). Only a parser that ended
    a response cleanly, and so is ready for the next, comes back.
    """

    __slots__ = ("_spare",)

    def __init__(self) -> None:
        self._spare: list[ResponseParser] = []

    def take(self) -> ResponseParser:
        return self._spare.pop() if self._spare else ResponseParser()

    def give(self, parser: ResponseParser) -> None:
        if len(self._spare) < MAX_SPARE_PARSERS:
            self._spare.append(parser)

    @property
    def spare(self) -> int:
        """How many are kept, unused."""
        return len(self._spare)


class _ClosedBeforeAnswer(ConnectionBroken):
    """The server closed the connection before any of the response arrived."""

    def __init__(self, cause: Exception | None) -> None:
        super().__init__(f"the server closed the connection before answering ({cause or 'EOF'})")


class _Connection(asyncio.Protocol):
    """One connection, carrying one request at a time."""

    # Slots: a connection per request in flight, thousands.
    __slots__ = ("_loop", "_method", "_parsers", "_waiter", "closed", "idle_since", "parser", "reused", "transport")

    def __init__(self, parsers: Parsers) -> None:
        self.transport: asyncio.Transport | None = None
        self._parsers = parsers
        #: Lent by ``parsers`` while a response arrives; ``None`` before its first byte.
        self.parser: ResponseParser | None = None
        self._method = ""
        self.closed = False
        #: Taken from the idle pool rather than newly made.
        self.reused = False
        self.idle_since = 0.0
        #: The answer to the request on the wire; done (or None) when none is.
        self._waiter: asyncio.Future[Parsed] | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # nothing was asked: the stream is out of step
            return
        parser = self.parser
        if parser is None:
            parser = self.parser = self._parsers.take()
            parser.expect(self._method)
        try:
            parsed = parser.feed(data)
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if parsed is not None:
            if parsed.keep_alive:  # else the connection goes, and the parser with it
                self.parser = None
                self._parsers.give(parser)
            waiter.set_result(parsed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.parser is None:  # lent only once a response's first byte arrived
            waiter.set_exception(_ClosedBeforeAnswer(exc))
            return
        try:
            waiter.set_result(self.parser.feed_eof())
        except ProtocolError as error:
            waiter.set_exception(error)

    def send(self, method: str, head: bytes, body: bytes) -> asyncio.Future[Parsed]:
        """Write a request; the future is its response.

        A future, not a coroutine: every coroutine between a message's task and the socket is
        a frame that each request keeps while it waits and that each wake-up passes through.
        """
        assert self.transport is not None
        self._method = method
        waiter = self._waiter = self._loop.create_future()
        if body:
            self.transport.writelines((head, body))  # not joined: over TCP, one writev for both
        else:
            self.transport.write(head)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Origin:
    """Kept-alive connections to one ``scheme://host:port``."""

    def __init__(
        self, origin: str, *, max_idle: int, resolve: Resolve | None, tls: ssl.SSLContext | None, parsers: Parsers
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"expected an http:// or https:// URL, got {origin!r}")
        self.host_header = parts.netloc.rpartition("@")[2]
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = tls if parts.scheme == "https" else None
        self._resolve = resolve
        self._max_idle = max_idle
        self._parsers = parsers
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()

    async def exchange(self, method: str, head: bytes, body: bytes, *, replayable: bool) -> Response:
        connection = self._reuse() or await self._connect()
        while True:
            self._busy.add(connection)
            try:
                parsed = await connection.send(method, head, body)
            except BaseException as exc:
                self._busy.discard(connection)
                connection.close()  # its state is unknown: a timeout or a cancel mid-response
                if not (isinstance(exc, _ClosedBeforeAnswer) and connection.reused and replayable):
                    raise
                # A replayable request may be sent again whether or not the server had it, once:
                # a new connection is not reused.
                connection = await self._connect()
                continue
            self._busy.discard(connection)
            break
        if parsed.keep_alive and not connection.closed and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return parsed.response

    def _reuse(self) -> _Connection | None:
        """The most recently idle connection still fit to use, if any."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.closed or now - connection.idle_since > MAX_IDLE_S:
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    async def _connect(self) -> _Connection:
        try:
            addresses = [self._host] if self._resolve is None else await self._resolve(self._host, self._port)
        except OSError as exc:
            raise ConnectFailed(f"cannot resolve {self._host}: {describe(exc)}") from exc
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self._parsers),
                    address,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                )
            except OSError as exc:
                failure = exc
                continue
            return connection
        why = f"{type(failure).__name__}: {failure}" if failure else "no address"
        raise ConnectFailed(f"cannot connect to {self.host_header}: {why}")

    def close(self) -> None:
        for connection in (*self._idle, *self._busy):
            connection.close()
        self._idle.clear()


def _scan(headers: Sequence[tuple[str, str]]) -> tuple[bool, bool]:
    """Whether the fields hold ``User-Agent``, and an idempotency key.

    Not a set of the lowered names: a request's frame would hold it while the request waits.
    """
    has_agent = has_idempotency_key = False
    for name, _ in headers:
        lower = name.lower()
        if lower == "user-agent":
            has_agent = True
        elif lower in IDEMPOTENCY_KEYS:
            has_idempotency_key = True
    return has_agent, has_idempotency_key


def split_url(url: str) -> tuple[str, str]:
    """``scheme://authority`` and the request target (path and query) of an absolute URL."""
    start = url.find("://")
    if start < 0:
        raise InvalidRequest(f"expected an absolute http:// or https:// URL, got {url[:80]!r}")
    slash = url.find("/", start + 3)
    if slash < 0:
        return url, "/"
    return url[:slash], url[slash:]


class HTTPTransport:
    """Requests to any origin over reused connections; each request within ``timeout_s``.

    ``resolve`` chooses the addresses to connect to (the callback guard uses it);
    ``verify=False`` skips certificate checks; ``tls`` replaces the default context (its own
    CA, a client certificate). ``User-Agent`` is added unless given.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        user_agent: str,
        max_idle: int,
        resolve: Resolve | None = None,
        verify: bool = True,
        tls: ssl.SSLContext | None = None,
        max_origins: int = MAX_ORIGINS,
    ) -> None:
        self._timeout_s = timeout_s
        self._deadlines = Deadlines(timeout_s)
        self._user_agent = ("User-Agent", user_agent)
        self._max_idle = max_idle
        self._resolve = resolve
        self._verify = verify
        #: Made for the first https origin unless given: loading the CA bundle takes tens of
        #: milliseconds.
        self._tls = tls
        self._max_origins = max_origins
        self._origins: OrderedDict[str, _Origin] = OrderedDict()
        #: Shared by every origin's connections.
        self._parsers = Parsers()

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        """Send one request and read the whole response within the timeout.

        Raises:
            InvalidRequest: the request cannot be sent as given.
            TransportTimeout: no complete response within the timeout.
            DestinationRefused, ConnectFailed: nothing was sent.
            ConnectionBroken: the connection broke after the request was sent.
            ProtocolError: the response was not valid HTTP/1.1.
        """
        origin_url, target = split_url(url)
        origin = self._origin(origin_url)
        has_agent, has_idempotency_key = _scan(headers)
        if not has_agent:
            headers = [self._user_agent, *headers]
        head = encode_head(method, target, origin.host_header, headers, body)
        # Not kept while the answer is awaited: every call in flight would hold them (0.4 KB a call).
        del url, headers, origin_url, target
        replayable = has_idempotency_key or method in REPLAYABLE_METHODS
        deadline = self._deadlines.start()
        try:
            return await origin.exchange(method, head, body, replayable=replayable)
        except asyncio.CancelledError:
            if self._deadlines.end(deadline):
                raise TransportTimeout(f"no answer within {self._timeout_s:g}s") from None
            raise
        except TimeoutError:
            raise TransportTimeout(f"no answer within {self._timeout_s:g}s") from None
        except OSError as exc:
            raise ConnectionBroken(describe(exc)) from exc
        finally:
            self._deadlines.end(deadline)

    def _origin(self, origin_url: str) -> _Origin:
        origin = self._origins.get(origin_url)
        if origin is not None:
            self._origins.move_to_end(origin_url)
            return origin
        if self._tls is None and origin_url.startswith("https:"):
            self._tls = _tls_context(self._verify)
        origin = self._origins[origin_url] = _Origin(
            origin_url, max_idle=self._max_idle, resolve=self._resolve, tls=self._tls, parsers=self._parsers
        )
        if len(self._origins) > self._max_origins:
            self._origins.popitem(last=False)[1].close()
        return origin

    def close(self) -> None:
        """Close every connection, idle or busy."""
        self._deadlines.close()
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
