"""The OTLP client's transport on the event loop, against a real HTTP server on loopback: what
the SDK's client reads of an answer, and what it sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.common.http import _ExportResult
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from function.tracing.export import LoopTransport, not_taken
from function.transport.http import HTTPTransport


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """Answers 503 (``Retry-After: 0``, a field given twice) to the first export, 200 after."""
    seen: list[web.Request] = []

    async def traces(request: web.Request) -> web.Response:
        seen.append(request)
        await request.read()
        if len(seen) == 1:
            return web.Response(status=503, headers=[("Retry-After", "0"), ("X-Twice", "a"), ("X-Twice", "b")])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def _transport() -> LoopTransport:
    return LoopTransport(asyncio.get_running_loop(), HTTPTransport(timeout_s=5, user_agent="qw-test", max_idle=2))


async def test_an_answer_reads_as_the_sdks_client_reads_it(collector: tuple[str, list[web.Request]]) -> None:
    url, _ = collector
    transport = _transport()

    busy = await asyncio.to_thread(transport.request, "POST", f"{url}/v1/traces", timeout=5, data=b"x")

    assert busy.status_code == 503
    assert (busy.headers().get("retry-after"), busy.headers()["RETRY-AFTER"]) == ("0", "0")
    assert busy.headers()["x-twice"] == "a, b"
    assert busy.error is None


async def test_an_unreachable_collector_is_a_connection_error_the_client_may_retry() -> None:
    transport = _transport()

    refused = await asyncio.to_thread(transport.request, "POST", "http://127.0.0.1:1/v1/traces", timeout=5, data=b"")

    assert refused.status_code is None
    assert transport.is_connection_error(refused.error)


async def test_the_sdks_client_retries_as_told_and_sends_its_headers(collector: tuple[str, list[web.Request]]) -> None:
    url, seen = collector
    exporter = OTLPSpanExporter(
        endpoint=f"{url}/v1/traces", headers={"Authorization": "Bearer t"}, _transport=_transport()
    )

    result = await asyncio.to_thread(exporter._client.export, b"\x0a\x00")
    exporter.shutdown()  # type: ignore[no-untyped-call]

    assert result.success
    assert len(seen) == 2  # the 503, then, after Retry-After's 0 s, the export taken
    assert (seen[1].headers["Content-Type"], seen[1].headers["Authorization"]) == ("application/x-protobuf", "Bearer t")


async def test_a_failed_export_says_why_from_the_clients_own_result(collector: tuple[str, list[web.Request]]) -> None:
    url, _ = collector

    async def export(endpoint: str, timeout_s: float = 1) -> str:
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s, _transport=_transport())
        try:
            return not_taken(await asyncio.to_thread(exporter._client.export, b"\x0a\x00"))
        finally:
            exporter.shutdown()  # type: ignore[no-untyped-call]

    # The collector's 503 is retried and then taken; an unknown path is refused with its status;
    # nobody listening is a connection failure, named as such, not a refusal.
    assert await export(f"{url}/v1/traces", timeout_s=10) == ""
    assert (await export(f"{url}/v1/nowhere")).startswith("status 404")
    assert (await export("http://127.0.0.1:1/v1/traces")).startswith("ConnectFailed")


def test_an_export_given_up_at_shutdown_says_what_its_last_try_met() -> None:
    # The client's own result for it (sdk: exporter/otlp/common/http.py) carries no reason.
    given_up = _ExportResult(False, None, None, None)

    assert not_taken(given_up, "ConnectFailed: refused") == "retries given up at shutdown after ConnectFailed: refused"
    assert not_taken(given_up) == "retries given up at shutdown"
