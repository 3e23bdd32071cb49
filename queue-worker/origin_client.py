"""A lean HTTP/1.1 client for one origin: the gateway that every invocation goes to, or the
receiver of a callback.

Why not aiohttp here: `make bench` measures aiohttp at about 75 µs of CPU per request, more
than half of what a whole message costs at full rate; this client spends about a third of that.
It can be small because its job is narrow. It talks to one origin over keep-alive connections. It forwards
headers that were already filtered, follows no redirects, uses no proxy and no cookie jar,
and hands back bodies as they came (not decompressed).

:class:`ResponseParser` is the whole of HTTP/1.1 response framing (RFC 9112 section 6) with no
I/O: status line and fields, interim 1xx responses, ``Content-Length``, chunked transfer coding
with trailers, bodies delimited by the connection closing, and the framing of responses to
``HEAD`` and of 204 and 304. :class:`OriginClient` keeps a pool of idle connections, enforces
a deadline per request, and retries once, on a new connection, a request whose reused
connection turned out to be closed by the server before any of the response arrived (the race
every keep-alive client meets when a server times out an idle connection).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Largest response head (status line and fields) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: Largest chunk-size line accepted (a size and chunk extensions).
MAX_CHUNK_LINE_BYTES = 4096
#: A request field name is a token (RFC 9110 section 5.1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a field value may not contain: a line break would start a new field or a new request.
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
#: What the request target may not contain.
_UNSAFE_TARGET = re.compile(r"[ \r\n\x00]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_NO_BODY_STATUSES = frozenset({204, 304})

#: Resolves a host and port to the addresses that may be connected to, in order of preference
#: (raising ``OSError`` when there are none).
Resolve = Callable[[str, int], Awaitable[list[str]]]


class ProtocolError(Exception):
    """The server's answer is not valid HTTP/1.1, or the connection ended in the middle of it."""


class InvalidRequest(ValueError):
    """A field name or value that cannot be sent without changing the request's meaning."""


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response; ``keep_alive`` says whether its connection may carry another."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool


def encode_request(method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The request's bytes: ``Host`` first, the given fields, then ``Content-Length``.

    ``headers`` must not carry ``Host``, ``Content-Length`` or ``Transfer-Encoding``: the
    client frames the request itself.

    Raises:
        InvalidRequest: a field name is not a token, or a value holds CR, LF or NUL.
    """
    if _TOKEN.fullmatch(method) is None or _UNSAFE_TARGET.search(target) is not None:
        raise InvalidRequest(f"cannot send {method!r} {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _UNSAFE_VALUE.search(value) is not None:
            raise InvalidRequest(f"header {name!r} cannot be sent as it is")
        lines.append(f"{name}: {value}\r\n")
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    try:
        # As UTF-8, like Go and aiohttp: the gateway stored the bytes it received as JSON text,
        # and this gives them back.
        head = "".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("a header holds a lone surrogate, which no bytes encode") from None
    return head + body


class ResponseParser:
    """Reads one response after another from the bytes of one connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head_request = False
        self._steps: dict[str, Callable[[], Response | bool]] = {
            "head": self._read_head,
            "length": self._read_length,
            "chunk-size": self._read_chunk_size,
            "chunk-data": self._read_chunk_data,
            "trailer": self._read_trailer,
            "until-close": self._until_close,
        }
        self._reset()

    def _reset(self) -> None:
        self._state = "head"
        self._status = 0
        self._headers: tuple[tuple[str, str], ...] = ()
        self._keep_alive = True
        self._remaining = 0
        self._body: list[bytes] = []

    def expect(self, method: str) -> None:
        """Say which request the next response answers (a response to HEAD has no body)."""
        self._head_request = method == "HEAD"

    @property
    def idle(self) -> bool:
        """No response has begun to arrive."""
        return self._state == "head" and not self._buffer

    def feed(self, data: bytes) -> Response | None:
        """Take bytes; returns the response once it is complete.

        Raises:
            ProtocolError: the bytes are not a valid response.
        """
        self._buffer += data
        return self._advance()

    def feed_eof(self) -> Response:
        """The connection closed: the response that this completes.

        Raises:
            ProtocolError: the response was not complete.
        """
        if self._state == "until-close":
            self._body.append(bytes(self._buffer))
            self._buffer.clear()
            return self._finish()
        raise ProtocolError("the connection closed before the response was complete")

    def _advance(self) -> Response | None:
        # Each step reads what its state expects: True when it moved on, False when it needs
        # more bytes, or the response it completed.
        while True:
            step = self._steps[self._state]()
            if step is False:
                return None
            if step is not True:
                return step

    def _read_length(self) -> Response | bool:
        if len(self._buffer) < self._remaining:
            return False
        self._body.append(bytes(self._buffer[: self._remaining]))
        del self._buffer[: self._remaining]
        return self._finish()

    def _read_chunk_data(self) -> bool:
        end = self._remaining
        if len(self._buffer) < end + 2:
            return False
        if self._buffer[end : end + 2] != b"\r\n":
            raise ProtocolError("a chunk does not end with CRLF")
        self._body.append(bytes(self._buffer[:end]))
        del self._buffer[: end + 2]
        self._state = "chunk-size"
        return True

    def _read_trailer(self) -> Response | bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            self._limit(MAX_HEAD_BYTES, "trailer section")
            return False
        del self._buffer[: end + 2]
        return self._finish() if end == 0 else True  # trailer fields are not kept

    @staticmethod
    def _until_close() -> bool:
        return False  # the body ends when the connection does: see feed_eof

    def _limit(self, limit: int, what: str) -> None:
        if len(self._buffer) > limit:
            raise ProtocolError(f"{what} longer than {limit} bytes")

    def _read_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            self._limit(MAX_HEAD_BYTES, "response head")
            return False
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or _DIGITS.fullmatch(code) is None or len(code) != 3:
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or _TOKEN.fullmatch(name) is None:
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            headers.append((name, value.strip(" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols")
            return True  # an interim response: the real one follows
        self._status, self._headers = status, tuple(headers)
        self._frame(version, headers)
        return True

    def _frame(self, version: str, headers: list[tuple[str, str]]) -> None:
        """Decide how the body is delimited (RFC 9112 section 6.3) and whether the connection
        may be reused."""
        connection: list[str] = []
        encodings: list[str] = []
        lengths: set[str] = set()
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                lengths.update(part.strip() for part in value.split(","))
            elif lower == "transfer-encoding":
                encodings.extend(part.strip().lower() for part in value.split(","))
            elif lower == "connection":
                connection.extend(part.strip().lower() for part in value.split(","))
        self._keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        if self._head_request or self._status in _NO_BODY_STATUSES:
            self._state, self._remaining = "length", 0
        elif encodings:
            if encodings[-1] == "chunked":
                self._state = "chunk-size"
            else:
                self._state, self._keep_alive = "until-close", False
        elif lengths:
            if len(lengths) != 1 or _DIGITS.fullmatch(next(iter(lengths))) is None:
                raise ProtocolError(f"invalid Content-Length: {sorted(lengths)}")
            self._state, self._remaining = "length", int(lengths.pop())
        else:
            self._state, self._keep_alive = "until-close", False

    def _read_chunk_size(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            self._limit(MAX_CHUNK_LINE_BYTES, "chunk-size line")
            return False
        size = bytes(self._buffer[:end].split(b";", 1)[0].rstrip(b" \t"))
        del self._buffer[: end + 2]
        if _HEX.fullmatch(size) is None:
            raise ProtocolError(f"invalid chunk size: {size[:20]!r}")
        self._remaining = int(size, 16)
        self._state = "trailer" if self._remaining == 0 else "chunk-data"
        return True

    def _finish(self) -> Response:
        response = Response(
            self._status,
            self._headers,
            b"".join(self._body),
            # Bytes beyond the response mean the two sides disagree on framing: start afresh.
            self._keep_alive and not self._buffer,
        )
        self._reset()
        return response


class _Connection(asyncio.Protocol):
    """One connection, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.closed = False
        #: Taken from the idle pool rather than newly made.
        self.reused = False
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # nothing was asked: the stream is out of step
            return
        try:
            response = self.parser.feed(data)
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if response is not None:
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.parser.idle:
            waiter.set_exception(_ClosedBeforeAnswer(exc))
            return
        try:
            waiter.set_result(self.parser.feed_eof())
        except ProtocolError as error:
            waiter.set_exception(error)

    async def exchange(self, method: str, data: bytes) -> Response:
        assert self.transport is not None
        self.parser.expect(method)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ClosedBeforeAnswer(ConnectionError):
    """The server closed the connection before any of the response arrived."""

    def __init__(self, cause: Exception | None) -> None:
        super().__init__(f"the server closed the connection before answering ({cause or 'EOF'})")


class OriginClient:
    """Requests to one origin (``http://`` or ``https://``) over reused connections.

    Not a general-purpose client: the caller gives the target path and the fields to send;
    responses come back whole. ``resolve`` chooses the addresses to connect to (the callback
    guard uses it); ``verify=False`` skips certificate checks.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        user_agent: str,
        max_idle: int,
        resolve: Resolve | None = None,
        verify: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        self._host = parts.hostname
        self._port = parts.port or default_port
        self._host_header = parts.netloc.rpartition("@")[2]
        self._origin = f"{parts.scheme}://{self._host_header}"
        self._base_path = parts.path.rstrip("/")
        self._ssl = _tls_context(verify) if parts.scheme == "https" else None
        self._resolve = resolve
        self._timeout_s = timeout_s
        self._user_agent = ("User-Agent", user_agent)
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()

    def target(self, path: str) -> str:
        """The request target for ``path`` (which starts with ``/``), under the URL's own path."""
        return self._base_path + path

    def url(self, path: str) -> str:
        """The full URL that ``path`` is requested at."""
        return self._origin + self.target(path)

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """Send one request and read the whole response within the timeout.

        ``User-Agent`` is added unless ``headers`` has one.

        Raises:
            InvalidRequest: the request cannot be sent as given.
            TimeoutError: no complete response within the timeout.
            OSError: the connection could not be made or broke (``ConnectionError``).
            ProtocolError: the response was not valid HTTP/1.1.
        """
        if not any(name.lower() == "user-agent" for name, _ in headers):
            headers = [self._user_agent, *headers]
        data = encode_request(method, self.target(path), self._host_header, headers, body)
        async with asyncio.timeout(self._timeout_s):
            connection = await self._connection()
            try:
                response = await self._send(connection, method, data)
            except _ClosedBeforeAnswer:
                if not connection.reused:
                    raise
                # The server had closed the idle connection: the request never reached it.
                connection = await self._connection(fresh=True)
                response = await self._send(connection, method, data)
        return response

    async def _send(self, connection: _Connection, method: str, data: bytes) -> Response:
        self._busy.add(connection)
        try:
            response = await connection.exchange(method, data)
        except BaseException:
            connection.close()  # its state is unknown: a timeout or a cancel mid-response
            raise
        finally:
            self._busy.discard(connection)
        if response.keep_alive and not connection.closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    async def _connection(self, fresh: bool = False) -> _Connection:
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        addresses = [self._host] if self._resolve is None else await self._resolve(self._host, self._port)
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, address, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
                )
            except OSError as exc:
                failure = exc
                continue
            return connection
        raise failure or OSError(f"no address to connect to for {self._host}")

    def close(self) -> None:
        """Close every connection, idle or busy."""
        for connection in (*self._idle, *self._busy):
            connection.close()
        self._idle.clear()


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
