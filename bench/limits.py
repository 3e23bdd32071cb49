"""The measurements of what used to break at the edges: large bodies at full concurrency,
callers inventing function names, memory at thousands of slots, and what call status costs.

Each returns plain figures for ``bench/results.json``; ``bench/__main__.py`` runs them in the
same run as the throughput table, so they are read beside the hand-written loop's figures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import nats

from bench.proc import peak_rss_mb, rss_mb
from harness.natsd import NatsServer
from harness.ports import free_port
from harness.publish import encode, gateway_request

if TYPE_CHECKING:
    from bench.__main__ import Bench

#: Messages of one MiB at 100 in flight: 100 MiB asked for at once by a count-only pull.
LARGE_BODY_BYTES = 1024 * 1024
LARGE_MESSAGES = 100
#: Distinct function names callers send, each called once.
FUNCTION_NAMES = 10_000
#: Calls held in flight at once, at a gateway that does not answer until they all arrived.
HELD_CALLS = 5_000


async def large_bodies(bench: Bench, implementation: str) -> dict[str, float]:
    """1 MiB bodies, 100 in flight, on a server taking 8 MiB messages: deliveries per message
    (1.0 is each once) and seconds to drain, with ``ack_wait`` at 60 s so a redelivery shows."""
    folder = Path(bench.logs)
    config = folder / "large.conf"
    config.write_text("max_payload: 8MB\n")
    server = NatsServer(extra_args=("-c", str(config))).start()
    nc = await nats.connect(server.url)
    original = bench.natsd, bench.nc
    bench.natsd, bench.nc = server, nc
    try:
        stream, durable = await bench.fresh_queue()
        process = bench.start(implementation, stream, durable, 100, ack_wait="60s")
        try:
            await bench.wait_bound(stream, durable)
            body = os.urandom(LARGE_BODY_BYTES)
            payloads = [encode(gateway_request("echo", body)) for _ in range(LARGE_MESSAGES)]
            started = time.monotonic()
            for payload in payloads:
                await nc.jetstream().publish(stream, payload)
            await bench.drained(stream, timeout_s=300)
            seconds = time.monotonic() - started
            delivered = (await nc.jetstream().consumer_info(stream, durable)).delivered.consumer_seq
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
        log = (server.store / "server.log").read_text(errors="replace")
        return {
            "deliveries_per_message": round(delivered / LARGE_MESSAGES, 2),
            "seconds": round(seconds, 2),
            "slow_consumer_cuts": float(log.count("Slow Consumer")),
        }
    finally:
        bench.natsd, bench.nc = original
        await nc.close()
        server.close()


async def function_names(bench: Bench) -> dict[str, float]:
    """10,000 distinct function names, each called once: the scrape's size and time (median of
    five) and the worker's peak RSS afterwards."""
    stream, durable = await bench.fresh_queue()
    metrics_port = free_port()
    process = bench.start("queue-worker", stream, durable, 100, metrics_port=str(metrics_port))
    try:
        await bench.wait_bound(stream, durable)
        for i in range(FUNCTION_NAMES):
            await bench.nc.publish(stream, encode(gateway_request(f"fn-{i}", b"x")))
            if i % 1000 == 999:
                await bench.nc.flush()
        await bench.nc.flush()
        await bench.drained(stream)
        timings, size = [], 0
        async with httpx.AsyncClient() as client:
            for _ in range(5):
                started = time.perf_counter()
                answer = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                timings.append(time.perf_counter() - started)
                size = len(answer.content)
        return {
            "names": FUNCTION_NAMES,
            "scrape_ms": round(statistics.median(timings) * 1000, 1),
            "scrape_mb": round(size / 1e6, 2),
            "peak_rss_mb": round(peak_rss_mb(process.pid), 1),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)


async def held_in_flight(bench: Bench, calls: int = HELD_CALLS) -> dict[str, float]:
    """The worker's memory with ``calls`` calls held in flight at once, each at a gateway that
    answers none until all have arrived and the worker's RSS has been read: RSS before and
    with them, and the difference per call.

    A steadier figure than the peak while a queue drains, which depends on how many calls
    happen to be in flight together; this one is what each slot of ``max_inflight`` costs."""
    arrived: list[asyncio.StreamWriter] = []
    everyone = asyncio.Event()
    released = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.append(writer)
        if len(arrived) >= calls:
            everyone.set()
        await released.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    gateway = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=calls)
    port = gateway.sockets[0].getsockname()[1]
    stream, durable = await bench.fresh_queue()
    process = bench.start(
        "queue-worker", stream, durable, calls, gateway_url=f"http://127.0.0.1:{port}", upstream_timeout="120s"
    )
    try:
        await bench.wait_bound(stream, durable)
        await asyncio.sleep(1.0)  # start-up's own allocations settle
        before = rss_mb(process.pid)
        await bench.fill([stream], "echo", calls)
        try:
            await asyncio.wait_for(everyone.wait(), 120)
        except TimeoutError:
            raise TimeoutError(f"{len(arrived)} of {calls} calls arrived") from None
        await asyncio.sleep(1.0)  # what the last arrivals set off settles
        held = rss_mb(process.pid)
        released.set()
        await bench.drained(stream)
        return {
            "calls": calls,
            "rss_mb_before": round(before, 1),
            "rss_mb_held": round(held, 1),
            "kb_per_call": round((held - before) * 1024 / calls, 2),
        }
    finally:
        released.set()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        gateway.close()
