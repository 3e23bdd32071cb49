"""A function server fast enough not to be what a benchmark measures.

A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies only) on uvloop. Any path
answers 200 at once, except ``/function/sleep...``, which answers after 100 ms. Each request's
``X-Start-Time`` (ns since the epoch) gives the time from publish to call. Requests to
``/callback`` (results posted back) are answered and counted apart. ``GET /stats`` reports and
resets the counters. Run as ``python -m bench.function_server PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

#: How long /function/sleep... takes.
SLEEP_S = 0.1
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Stats:
    """Counts of requests and their publish-to-call latencies since the last read."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.callbacks = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies_ms: list[float] = []

    def record(self, start_ns: int | None) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if start_ns is not None:
            self.latencies_ms.append((time.time_ns() - start_ns) / 1e6)

    def read(self) -> bytes:
        body = json.dumps(
            {
                "count": self.count,
                "callbacks": self.callbacks,
                "first": self.first,
                "last": self.last,
                "latencies_ms": self.latencies_ms,
            }
        ).encode()
        self.reset()
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Connection(asyncio.Protocol):
    """One keep-alive connection; parses just enough HTTP/1.1 to answer each request."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(lines[0].split(" ")[1], headers)

    def answer(self, path: str, headers: dict[str, str]) -> None:
        assert self.transport is not None
        if path == "/stats":
            self.transport.write(self.stats.read())
            return
        if path == "/callback":
            self.stats.callbacks += 1
            self.transport.write(RESPONSE)
            return
        start = headers.get("x-start-time")
        self.stats.record(int(start) if start and start.isdigit() else None)
        if path.startswith("/function/sleep"):
            asyncio.get_running_loop().call_later(SLEEP_S, self._write_later)
        else:
            self.transport.write(RESPONSE)

    def _write_later(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    stats = Stats()
    server = await asyncio.get_running_loop().create_server(lambda: Connection(stats), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(int(sys.argv[1])))
