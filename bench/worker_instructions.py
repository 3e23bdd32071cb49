"""Instructions a message costs the whole worker process as it runs, counted by callgrind: the
connector, nats-py, the handler, its HTTP client and, with tracing on, the spans' export.
Tracing's cost at 10%, as a share of the worker's instructions.

:mod:`bench.instructions` counts the handler alone, in process; this counts the worker draining
a queue of the bench's own (its nats-server, function server and OTLP receiver), so it also
sees what the handler leaves to others. By hand, a worker keeping every attempt spent 257k
instructions more a message than one keeping none, against 192k more for the handler alone:
the rest is the export and its HTTP requests.

Why counts and not only timing: side by side with tracing off, the worker traced at 10% came
out at 0.87-1.00 of its rate over seven rounds of one ``make bench``, around a cost of 5%.
Untraced, the count moved by 0.5% over six runs (507.5k-509.9k a message); traced, five runs
gave 538.5k-541.3k (1.060-1.063x) and one, in a ``make bench`` in a slow spell, 584.4k (1.151x),
with the same calls handled and no export failing. What made that one differ is not known (a
full collection of the garbage collector falling in the window or not is one guess), so read
one run's ratio as one sample. Counts leave out what instructions do not show (cache misses,
the kernel, nats-server's own work): they stand beside the timed ratios, not for them.

Each arm's worker runs under callgrind, about fifty times slower than alone: it drains
:data:`WARM` calls, its counters are zeroed, it drains :data:`MESSAGES` more and they are
dumped; then it idles :data:`IDLE_S` and they are dumped again. What the worker does by the
clock rather than by message (timers, the lock file, idle pulls) is counted per second while
idle, and the drain's share of it taken off. Needs valgrind: ``python -m
bench.worker_instructions`` takes about three minutes on two cores; ``make bench`` runs it
when valgrind is installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from harness.otlp import OtlpReceiver

if TYPE_CHECKING:
    from bench.__main__ import Bench

WARM, MESSAGES, IDLE_S = 300, 3000, 10.0
#: What the worker is started with in each arm; ``OTLP`` stands for the receiver's URL. Both
#: without call status, whose store confirms a write every 0.1 s: fifty times as many writes
#: a message under valgrind. A batch of spans goes out when 512 are waiting, as at full speed
#: (900 spans a second at 10%), not every 5 s with a hundred in it, as it would under valgrind.
ARMS: dict[str, dict[str, str]] = {
    "untraced": {"call_status_ttl": "0s"},
    "traced_10_percent": {
        "call_status_ttl": "0s",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    },
}


def _summary(dump: Path) -> int:
    """The instructions a callgrind dump holds (its ``summary:`` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {dump}")


def _control(*arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


async def _arm(bench: Bench, settings: Mapping[str, str], out: Path) -> float:
    """Thousands of instructions a message of one worker started with ``settings``."""
    stream, durable = await bench.fresh_queue()
    valgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p")
    # The same dict and set layouts in every run.
    worker = bench.start("queue-worker", stream, durable, 100, under=valgrind, PYTHONHASHSEED="0", **settings)
    pid = str(worker.pid)
    try:
        await bench.wait_bound(stream, durable, timeout_s=600)
        await bench.fill([stream], "echo", WARM)
        await bench.drained(stream, timeout_s=600)
        _control("--zero", pid)
        started = time.monotonic()
        await bench.fill([stream], "echo", MESSAGES)
        await bench.drained(stream, timeout_s=600)
        _control("--dump", pid)
        busy_s = time.monotonic() - started
        await asyncio.sleep(1.0)
        _control("--zero", pid)
        started = time.monotonic()
        await asyncio.sleep(IDLE_S)
        _control("--dump", pid)
        idle_s = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 300)
    busy, idle = (_summary(out / f"callgrind.{pid}.{part}") for part in (1, 2))
    return (busy - idle / idle_s * busy_s) / MESSAGES / 1000


async def measure(bench: Bench) -> dict[str, float]:
    """Thousands of instructions a message untraced and traced at 10%, and their ratio."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind is not installed")
    at_once = asyncio.Semaphore(os.cpu_count() or 1)  # one worker under valgrind takes a core
    otlp = await OtlpReceiver(keep=False).start()

    async def counted(name: str) -> float:
        settings = {key: value.replace("OTLP", otlp.url) for key, value in ARMS[name].items()}
        async with at_once:
            with tempfile.TemporaryDirectory(prefix=f"callgrind-{name}-") as out:
                return await _arm(bench, settings, Path(out))

    try:
        per_message = dict(zip(ARMS, await asyncio.gather(*(counted(name) for name in ARMS)), strict=True))
    finally:
        await otlp.close()
    untraced, traced = per_message["untraced"], per_message["traced_10_percent"]
    return {
        "untraced_k": round(untraced, 1),
        "traced_10_percent_k": round(traced, 1),
        "ratio": round(traced / untraced, 4),
    }


async def _main() -> None:
    import nats

    from bench.__main__ import Bench
    from bench.parts import running

    async with running() as (natsd, port):
        client = await nats.connect(natsd.url)
        try:
            print(json.dumps(await measure(Bench(natsd, client, port))))
        finally:
            await client.close()


if __name__ == "__main__":
    asyncio.run(_main())
