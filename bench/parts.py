"""The parts every benchmark runs against: nats-server and the function server, each in a
process of its own, stopped however the run ends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harness.natsd import NatsServer
from harness.ports import free_port
from harness.worker import ROOT


def start_function_server(port: int) -> subprocess.Popen[bytes]:
    """The function server in a process of its own, so it has its own core to run on."""
    return subprocess.Popen([sys.executable, "-m", "bench.function_server", str(port)], cwd=ROOT)


@asynccontextmanager
async def running() -> AsyncIterator[tuple[NatsServer, int]]:
    """nats-server and the function server; yields the server and the function server's port."""
    natsd = NatsServer().start()
    port = free_port()
    server = start_function_server(port)
    try:
        await asyncio.sleep(0.5)  # the function server's start
        yield natsd, port
    finally:
        server.terminate()
        server.wait()
        natsd.close()
