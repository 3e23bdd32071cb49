"""A picture of one call's trace, from a real run: a call that fails once (503) and succeeds on
its retry, with a callback, queued through the front door under a caller's trace. The worker
exports to an OTLP/HTTP receiver; the spans it received are drawn as a waterfall in
``bench/trace.png``. Run by ``make bench``, or alone: ``python -m bench.trace_picture``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import httpx
import matplotlib
from aiohttp import web

from harness.natsd import NatsServer
from harness.otlp import OtlpReceiver, ReceivedSpan
from harness.servers import RecordingServer, wait_until
from harness.worker import WorkerProcess

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PICTURE = Path(__file__).with_name("trace.png")
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def record() -> list[ReceivedSpan]:
    """Run the call and return the spans the worker exported."""
    natsd = NatsServer().start()
    otlp = await OtlpReceiver().start()
    gateway, receiver = await RecordingServer().start(), await RecordingServer().start()
    answers = itertools.chain([503], itertools.repeat(200))

    async def orders(request: web.Request, body: bytes) -> web.Response:
        await asyncio.sleep(0.03)  # a function that takes a moment
        return web.Response(status=next(answers), text="done")

    gateway.behaviours["orders"] = orders
    env = {
        "nats_url": natsd.url,
        "gateway_url": gateway.url,
        "queue_name": "faas-request",
        "initial_retry_wait": "200ms",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    worker = WorkerProcess(env).start()
    try:
        await worker.wait_ready()
        async with httpx.AsyncClient() as client:
            await client.post(
                f"http://127.0.0.1:{worker.port}/async-function/orders",
                content=b"order 42",
                headers={"traceparent": CALLER, "X-Callback-Url": receiver.url + "/done"},
            )
        await receiver.wait_for(1)
        await wait_until(lambda: sum(s.kind == 3 for s in otlp.spans) == 3, 10, "the client spans")
        return list(otlp.spans)
    finally:
        worker.close()
        await gateway.close()
        await receiver.close()
        await otlp.close()
        natsd.close()


def _label(span: ReceivedSpan) -> str:
    attributes = span.attributes
    if "queue_worker.attempt" in attributes:
        return f"{span.name} (attempt {attributes['queue_worker.attempt']}, {attributes.get('queue_worker.outcome')})"
    if "url.full" in attributes:
        return f"{span.name} {attributes['url.full']} -> {attributes.get('http.response.status_code')}"
    return span.name


def draw(spans: list[ReceivedSpan], path: Path = PICTURE) -> Path:
    """A waterfall: one row per span, indented under its parent, in start order."""
    by_parent: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_parent.setdefault(span.parent_id, []).append(span)
    ids = {s.span_id for s in spans}
    rows: list[tuple[int, ReceivedSpan]] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        rows.append((depth, span))
        for child in sorted(by_parent.get(span.span_id, []), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns):
        walk(root, 0)
    origin = min(s.start_ns for s in spans)
    figure, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1))
    for row, (depth, span) in enumerate(rows):
        start, width = (span.start_ns - origin) / 1e6, max((span.end_ns - span.start_ns) / 1e6, 0.5)
        ax.barh(row, width, left=start, color="#d62728" if span.error else "#1f77b4")
        ax.text(start + width + 3, row, "    " * depth + _label(span), va="center", fontsize=8)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the caller's request reached the worker")
    ax.set_title(f"trace {spans[0].trace_id}: the caller's span is the parent of 'send'")
    ax.set_xlim(0, (max(s.end_ns for s in spans) - origin) / 1e6 * 1.9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    print(f"drew {draw(asyncio.run(record()))}")
    sys.exit(0)
