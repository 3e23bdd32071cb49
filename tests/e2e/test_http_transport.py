"""The HTTP transport against real servers on loopback: aiohttp's, and bare sockets for the
behaviours a well-behaved server only shows under load (idle timeouts, silence, cut answers)."""

from __future__ import annotations

import asyncio
import base64
import gc
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from function.callbacks.guard import Destination
from function.callbacks.post import CallbackInfo, post_callback
from function.invoke import Invocation, Invoker
from function.transport import ConnectFailed, ConnectionBroken, ProtocolError, Response, TransportTimeout
from function.transport.http import HTTPTransport
from function.wire.queue_request import QueueRequest
from harness.ports import free_port
from harness.servers import RecordingServer

pytestmark = pytest.mark.e2e

#: A bare server's way of answering one connection.
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class BareServer:
    """Counts connections and lets ``serve`` answer each one."""

    def __init__(self, serve: Serve) -> None:
        self.connections = 0
        self.port = free_port()
        self._serve = serve
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> BareServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head + await reader.readexactly(length)


class OriginClient:
    """A transport bound to one base URL, as the invoker uses it."""

    def __init__(self, base_url: str, transport: HTTPTransport) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        return await self.transport.request(method, self.base_url + path, headers, body)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., OriginClient]]:
    made: list[HTTPTransport] = []

    def make(url: str, timeout_s: float = 10.0) -> OriginClient:
        made.append(HTTPTransport(timeout_s=timeout_s, user_agent="queue-worker/test", max_idle=4))
        return OriginClient(url, made[-1])

    yield make
    for transport in made:
        transport.close()


async def test_requests_reuse_one_connection_and_send_what_they_are_given(
    client_for: Callable[..., OriginClient],
) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await _read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Echo: yes\r\n\r\nok")

    async with BareServer(serve) as server:
        client = client_for(server.url + "/base/")
        for i in range(5):
            response = await client.request("PUT", f"/function/f/?i={i}", [("X-A", "1")], b"body")
            assert (response.status, response.body, response.headers[-1]) == (200, b"ok", ("X-Echo", "yes"))

    assert server.connections == 1
    assert seen[4] == (
        b"PUT /base/function/f/?i=4 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: queue-worker/test\r\n"
        b"X-A: 1\r\nContent-Length: 4\r\n\r\nbody" % server.port
    )


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(
    client_for: Callable[..., OriginClient],
) -> None:
    async def answer_once_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # As a server does when its idle timeout fires just as the client reuses the connection:
        # no "Connection: close", the connection simply ends after the answer.
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with BareServer(answer_once_then_hang_up) as server:
        client = client_for(server.url)
        statuses = []
        for _ in range(3):
            statuses.append((await client.request("POST", "/function/f", [], b"x")).status)
            # Long enough for the hang-up to arrive: a connection known closed is never reused.
            await asyncio.sleep(0.05)

    assert statuses == [200, 200, 200]
    assert server.connections == 3


@pytest.mark.parametrize(
    ("method", "headers", "resent"),
    [
        ("POST", [], False),
        ("PUT", [], False),
        ("DELETE", [], False),
        ("GET", [], True),
        ("POST", [("Idempotency-Key", "k-1")], True),
    ],
)
async def test_a_request_that_may_have_been_received_is_never_sent_again(
    client_for: Callable[..., OriginClient], method: str, headers: list[tuple[str, str]], resent: bool
) -> None:
    received: list[bytes] = []

    async def answer_once_then_take_and_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The gateway reads the request, then the connection ends without an answer: it may
        # well have invoked the function. Only an idempotent request may go again.
        while True:
            received.append(await _read_request(reader))
            if len(received) % 2:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            else:
                return

    async with BareServer(answer_once_then_take_and_drop) as server:
        client = client_for(server.url)
        assert (await client.request(method, "/function/f", headers, b"")).status == 200
        if resent:
            assert (await client.request(method, "/function/f", headers, b"")).status == 200
        else:
            with pytest.raises(ConnectionBroken):
                await client.request(method, "/function/f", headers, b"")

    assert len(received) == (3 if resent else 2)


class _Fields(list[tuple[str, str]]):
    """A request's fields that can be watched for being let go (a plain list cannot)."""


async def test_a_request_waiting_for_its_answer_has_let_go_of_its_fields(
    client_for: Callable[..., OriginClient],
) -> None:
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        arrived.set()
        await answer.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with BareServer(hold) as server:
        client = client_for(server.url)
        # With its own User-Agent, the transport sends these fields as given, not a copy.
        fields = _Fields([("User-Agent", "test"), ("X-Call-Id", "1")])
        watched = weakref.ref(fields)
        call = asyncio.create_task(client.transport.request("POST", server.url + "/function/f", fields, b"x"))
        del fields
        await asyncio.wait_for(arrived.wait(), 10)
        gc.collect()
        # Every call in flight would otherwise hold them until its answer.
        assert watched() is None
        answer.set()
        assert (await asyncio.wait_for(call, 10)).status == 200


async def test_a_silent_server_times_out_and_its_connection_is_dropped(
    client_for: Callable[..., OriginClient],
) -> None:
    answered = 0

    async def silent_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        while True:
            await _read_request(reader)
            if answered:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            answered += 1

    async with BareServer(silent_first) as server:
        client = client_for(server.url, timeout_s=0.2)
        with pytest.raises(TransportTimeout):
            await client.request("POST", "/function/slow", [], b"")
        # A late answer on the old connection must not be taken for the next request's.
        response = await client.request("POST", "/function/f", [], b"")

    assert response.status == 200
    assert server.connections == 2


async def test_an_answer_cut_short_is_a_protocol_error(client_for: Callable[..., OriginClient]) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async with BareServer(cut) as server:
        with pytest.raises(ProtocolError):
            await client_for(server.url).request("POST", "/function/f", [], b"")


async def test_both_framings_at_once_is_an_error_and_the_connection_is_not_reused(
    client_for: Callable[..., OriginClient],
) -> None:
    async def smuggling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            await writer.drain()

    async with BareServer(smuggling) as server:
        client = client_for(server.url)
        for _ in range(2):
            with pytest.raises(ProtocolError, match="Transfer-Encoding"):
                await client.request("POST", "/function/f", [], b"")

    assert server.connections == 2  # each answer closed its connection (RFC 9112 section 6.3)


async def test_a_closed_port_is_a_connection_error(client_for: Callable[..., OriginClient]) -> None:
    with pytest.raises(ConnectFailed, match="Connect call failed"):
        await client_for(f"http://127.0.0.1:{free_port()}").request("POST", "/function/f", [], b"")


async def test_chunked_and_large_answers_from_aiohttp(client_for: Callable[..., OriginClient]) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB

    async def streamed(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Streamed": "yes"})
        await response.prepare(request)
        for at in range(0, len(big), 100_000):
            await response.write(big[at : at + 100_000])
        await response.write_eof()
        return response

    server = await RecordingServer(behaviours={"stream": streamed}).start()
    try:
        client = client_for(server.url)
        chunked = await client.request("GET", "/function/stream/", [], b"")
        echoed = await client.request("POST", "/function/echo/", [("Content-Type", "application/x")], big)
    finally:
        await server.close()

    assert (chunked.status, chunked.body == big, ("Transfer-Encoding", "chunked") in chunked.headers) == (
        200,
        True,
        True,
    )
    assert (echoed.status, echoed.body == big) == (200, True)
    assert server.calls[1].header("Content-Type") == "application/x"


async def test_https_with_a_private_ca_from_ssl_cert_file(
    certificates: Path, client_for: Callable[..., OriginClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL reads SSL_CERT_FILE for its default trust store, as it does in the image.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "nats-ca.crt"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.crt", certificates / "server.key")

    async def secure(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_post("/function/f", secure)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        response = await client_for(f"https://127.0.0.1:{port}").request("POST", "/function/f", [], b"")
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusting = client_for(f"https://127.0.0.1:{port}")
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.request("POST", "/function/f", [], b"")
    finally:
        await runner.cleanup()

    assert (response.status, response.body) == (200, b"secure")


async def test_a_stored_header_that_would_split_the_request_is_answered_400_unsent(
    gateway: RecordingServer, client_for: Callable[..., OriginClient]
) -> None:
    invoker = Invoker(transport=client_for(gateway.url).transport, gateway_url=gateway.url)
    smuggler = QueueRequest(function="f", header={"X-A": ("1\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1",)})

    result = await invoker.invoke(smuggler)
    fine = await invoker.invoke(QueueRequest(function="f", header={"X-A": ("1",)}))

    assert (result.status, "cannot be sent" in result.error) == (400, True)
    assert fine.status == 200
    assert [call.path_qs for call in gateway.calls] == ["/function/f/"]


async def test_callbacks_reuse_connections_send_url_credentials_and_check_certificates_unless_told(
    certificates: Path, receiver: RecordingServer
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.crt", certificates / "server.key")
    tls_receiver = await RecordingServer().start(ssl_context=context)
    result = Invocation(Response(200, (("Content-Type", "text/plain"),), b"done"), 0.01)
    info = CallbackInfo("call-1", "f", 0, 2)
    checking, insecure = (
        HTTPTransport(timeout_s=10, user_agent="t", max_idle=4, verify=verify) for verify in (True, False)
    )
    tls_url = Destination.parse(f"https://127.0.0.1:{tls_receiver.port}/cb")
    try:
        plain = [
            await post_callback(
                checking, Destination.parse(f"http://user:p%40ss@127.0.0.1:{receiver.port}/cb?n={n}"), result, info
            )
            for n in range(3)
        ]
        untrusted = await post_callback(checking, tls_url, result, info)
        trusted_anyway = await post_callback(insecure, tls_url, result, info)
    finally:
        checking.close()
        insecure.close()
        await tls_receiver.close()

    assert [d.status for d in plain] == [200, 200, 200]
    assert [call.path_qs for call in receiver.calls] == ["/cb?n=0", "/cb?n=1", "/cb?n=2"]
    assert receiver.calls[0].header("Authorization") == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert len({call.peer for call in receiver.calls}) == 1  # one connection, kept alive
    assert (untrusted.status, untrusted.refused, "CERTIFICATE_VERIFY_FAILED" in untrusted.error) == (None, False, True)
    assert trusted_anyway.status == 200
    assert tls_receiver.calls[0].body == b"done"
