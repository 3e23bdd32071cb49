"""Free loopback ports.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from the ephemeral range, the
same range every outgoing connection takes its local port from: with hundreds of connections
opening in parallel tests, one of them can take it before the process meant to listen there
does ("address already in use"). So ports are chosen below the ephemeral range instead, from a
block of its own for each test process (xdist worker), and checked free before use.
"""

from __future__ import annotations

import itertools
import os
import socket

#: Below Linux's default ephemeral range (32768-60999), above the well-known and registered-low ports.
FIRST, LAST = 10_000, 32_000
#: Ports per test process: the gw0..gwN blocks never overlap.
BLOCK = 1_000


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    # The main process (no worker) and gw0 share a block; they never run tests at once.
    start = FIRST + (index * BLOCK) % (LAST - FIRST - BLOCK)
    return range(start, start + BLOCK)


_candidates = itertools.cycle(_block())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and that no outgoing connection takes."""
    for _ in range(BLOCK):
        port = next(_candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_block()}")
