"""CPU per request of two HTTP clients the worker could invoke with: its transport and aiohttp.

Each sends the same POSTs to the function server from 100 concurrent loops on an event loop in
a thread of its own, whose CPU time (system calls included) is the client's.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from harness.worker import HANDLER
from runtime.loader import import_package

import_package(HANDLER)  # as the package "function", as in the image

from function.transport.http import HTTPTransport, ResponseParser  # noqa: E402

CONCURRENCY = 100
REQUESTS = 20_000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


async def _per_request_us(send: Callable[[], Awaitable[None]]) -> float:
    async def loop(count: int) -> None:
        for _ in range(count):
            await send()

    await asyncio.gather(*(loop(10) for _ in range(CONCURRENCY)))  # connections made, code warm
    started = _cpu_s()
    await asyncio.gather(*(loop(REQUESTS // CONCURRENCY) for _ in range(CONCURRENCY)))
    return (_cpu_s() - started) / REQUESTS * 1e6


async def _measure(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}"
    ours = HTTPTransport(timeout_s=60, user_agent="bench", max_idle=CONCURRENCY)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
    headers = [("Content-Type", "text/plain")]

    async def with_ours() -> None:
        await ours.request("POST", url + "/function/echo/", headers, b"hello")

    async def with_aiohttp() -> None:
        async with session.post(url + "/function/echo/", data=b"hello", headers=dict(headers)) as response:
            await response.read()

    try:
        return {
            "http_transport_us": round(await _per_request_us(with_ours), 1),
            "aiohttp_us": round(await _per_request_us(with_aiohttp), 1),
        }
    finally:
        ours.close()
        await session.close()


#: A typical answer from a function behind the gateway, to time the response parser alone.
TYPICAL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"
    b"Date: Tue, 01 Dec 2026 21:58:39 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\nX-Echo: yes\r\n\r\nhello"
)


def parse_us(rounds: int = 100_000) -> float:
    """CPU µs to frame one typical response with the transport's parser (best of five)."""
    parser = ResponseParser()
    best = float("inf")
    for _ in range(5):
        started = _cpu_s()
        for _ in range(rounds):
            parser.expect("POST")
            parser.feed(TYPICAL_RESPONSE)
        best = min(best, _cpu_s() - started)
    return round(best / rounds * 1e6, 2)


def measure_clients(port: int) -> dict[str, float]:
    """CPU µs per request of each client against the server on ``port`` (run it in a thread),
    and of the response parser alone."""
    return {**uvloop.run(_measure(port)), "response_parse_us": parse_us()}


if __name__ == "__main__":
    print(measure_clients(int(sys.argv[1])))
