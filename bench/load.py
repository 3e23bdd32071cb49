"""A lower bound on the function server's own rate: keep-alive connections, one request at a time each."""

from __future__ import annotations

import asyncio
import time

import uvloop

REQUEST = b"POST /function/echo/ HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello"


async def _connection(port: int, deadline: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.monotonic() < deadline:
        writer.write(REQUEST)
        await reader.readuntil(b"\r\n\r\nok")
        done += 1
    writer.close()
    return done


async def _measure(port: int, connections: int, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    counts = await asyncio.gather(*(_connection(port, deadline) for _ in range(connections)))
    return sum(counts) / seconds


def measure_server(port: int, connections: int, seconds: float) -> float:
    """Requests per second the server answered (its true rate is at least this)."""
    return uvloop.run(_measure(port, connections, seconds))
