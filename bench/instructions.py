"""Instructions a message costs the worker's handler, counted by valgrind: untraced, and what
tracing adds to an attempt the sampler drops and to one it keeps (its three spans, encoded as
they are for export).

Timing cannot show a change of a few percent on this shared machine: the same handler, timed in
process, moves by a tenth from one pass to the next. An instruction count (callgrind's) of a run
with a fixed hash seed (``PYTHONHASHSEED=0``) moves by about 0.001% from run to run (0.07% with
a random seed, which lays out every dict and set anew: 600 messages, four runs each, by hand), so
two versions of the message path can be compared closely, though not what they cost in time:
caches and the rest of the process are left out.

The handler runs in this process as the worker runs it, 100 messages at a time and with its
garbage collector settings, with a ``MockTransport`` for the gateway (no I/O) and call status
off. Each arm is counted twice, with ``SHORT`` and with ``LONG`` messages after a warm-up; the
difference, per message, leaves out the interpreter's start and the making of the messages,
which every run does alike. Needs valgrind: ``python -m
bench.instructions`` takes about three and a half minutes on two cores; ``make bench`` runs it
when valgrind is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TextIO

import uvloop
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from prometheus_client import CollectorRegistry

from harness.worker import HANDLER, ROOT
from runtime import Context, Event, Settings, logs
from runtime.app import keep_gc_off_the_hot_path
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function import tracing  # noqa: E402
from function.callbacks.results import ResultStore  # noqa: E402
from function.invoke import Invoker  # noqa: E402
from function.metrics import FunctionLabels, WorkerMetrics  # noqa: E402
from function.settings import WorkerSettings  # noqa: E402
from function.status.store import CallStatus  # noqa: E402
from function.tracing import otlp  # noqa: E402
from function.tracing.export import ratio_answers  # noqa: E402
from function.tracing.recorder import Tracer  # noqa: E402
from function.transport import MockTransport, Response  # noqa: E402
from function.wire.queue_request import QueueRequest, encode  # noqa: E402
from function.worker import QueueWorker  # noqa: E402

ARMS = {"untraced": None, "dropped": 0.0, "kept": 1.0}
SHORT, LONG, WARM, AT_ONCE = 200, 1200, 300, 100
GATEWAY = "http://gateway.test:8080"
#: Spans waiting before they are encoded, as the batches wait (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``).
BATCH = 512


def _trace(ratio: float | None) -> None:
    """Tracing off, or on with a ``traceidratio`` sampler whose ended spans are encoded in batches."""
    if ratio is None:
        return
    sampler = TraceIdRatioBased(ratio)
    encoder = otlp.Encoder({"service.name": "queue-worker"}, "queue-worker", "bench")
    waiting: list[otlp.SpanData] = []

    def ended(span: otlp.SpanData) -> None:
        waiting.append(span)
        if len(waiting) >= BATCH:
            encoder.encode(waiting)
            waiting.clear()

    tracing._tracer, tracing._sampler, tracing._w3c_only = Tracer(sampler, ended), sampler, True
    tracing._answers = ratio_answers(sampler)


async def _handle(messages: int, log_stream: TextIO) -> None:
    """``WARM`` messages, then ``messages`` more (at most ``LONG``), through the handler,
    ``AT_ONCE`` at a time."""
    worker = QueueWorker(
        settings=WorkerSettings.from_env({"gateway_url": GATEWAY}),
        invoker=Invoker(
            transport=MockTransport(lambda _: Response(200, (("Content-Type", "text/plain"),), b"ok")),
            gateway_url=GATEWAY,
        ),
        callbacks=MockTransport(lambda _: Response(200)),
        metrics=WorkerMetrics.create(CollectorRegistry(), "bench"),
        rng=random.Random(1),
        status=CallStatus("calls", ttl_s=0),
        cancellations=frozenset(),
        results=ResultStore("results"),
        labels=FunctionLabels(100, "openfaas-fn"),
    )
    log = logs.configure(encoding="json", debug=False, stream=log_stream)
    context = Context(Settings.from_env({"queue_name": "faas-request"}), log, CollectorRegistry())
    ids = random.Random(7)

    async def drain(calls: Iterator[bytes]) -> None:
        for data in calls:
            await worker.handle(Event(data, {}, "faas-request", 7, 1, datetime.now(UTC)), context)

    # As many made in every run, whatever it handles: the difference between two runs is then
    # the handling alone, not the making of the messages (a quarter of the count, when they
    # were made as they were handled).
    made = [
        encode(
            QueueRequest(
                function="echo",
                body=b"hello",
                header={
                    "X-Call-Id": (f"{ids.getrandbits(128):032x}",),
                    "X-Start-Time": ("1796246750316863644",),
                    "Content-Type": ("text/plain",),
                },
            )
        )
        for _ in range(WARM + LONG)
    ]
    keep_gc_off_the_hot_path(AT_ONCE)  # as the worker collects, once bound
    for batch in (made[:WARM], made[WARM : WARM + messages]):
        calls = iter(batch)
        await asyncio.gather(*(drain(calls) for _ in range(AT_ONCE)))


def _counted(arm: str, messages: int) -> int:
    """Instructions of one child process running ``arm`` on ``messages`` messages."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.instructions", "--arm", arm, "--messages", str(messages)]
    environ = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set layouts in every run
    done = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def measure() -> dict[str, float]:
    """Thousands of instructions a message: untraced, and what a dropped and a kept attempt add."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed")
    runs = [(arm, n) for arm in ARMS for n in (SHORT, LONG)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(lambda run: _counted(*run), runs), strict=True))
    per_message = {arm: (counts[arm, LONG] - counts[arm, SHORT]) / (LONG - SHORT) / 1000 for arm in ARMS}
    return {
        "untraced_k": round(per_message["untraced"], 1),
        "dropped_attempt_adds_k": round(per_message["dropped"] - per_message["untraced"], 1),
        "kept_attempt_adds_k": round(per_message["kept"] - per_message["untraced"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--messages", type=int, default=LONG)
    arguments = parser.parse_args()
    if arguments.arm is None:
        print(json.dumps(measure()))
        return
    _trace(ARMS[arguments.arm])
    with open(os.devnull, "w") as nowhere:
        uvloop.run(_handle(arguments.messages, nowhere))


if __name__ == "__main__":
    main()
