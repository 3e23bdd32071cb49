"""What an operator's tools read: metric names that do not depend on the environment, process
metrics, prometheus_client's negotiation, and the watchdog's readiness lock following NATS."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.natsd import NatsServer
from harness.publish import QueueRequest, encode
from harness.servers import RecordingServer, wait_until
from harness.worker import WorkerProcess
from tests.support import Queue, WorkerFactory, wait_for_empty

pytestmark = pytest.mark.e2e


async def _metrics(worker: WorkerProcess, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", headers=headers)


@pytest.mark.parametrize("namespace", [None, "elsewhere"])
async def test_the_openfaas_names_whatever_metrics_namespace_says(
    namespace: str | None, start_worker: WorkerFactory
) -> None:
    worker = start_worker(**({"metrics_namespace": namespace} if namespace else {}))
    await worker.wait_ready()
    await asyncio.sleep(0.5)

    text = (await _metrics(worker)).text

    for name in (
        "queue_worker_pending_messages",
        "queue_worker_messages_processed_total",
        "queue_worker_messages_submitted_total",
        "queue_worker_function_invocation_inflight",
        "queue_worker_nats_reconnect_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert "jetstream_" not in text
    assert "elsewhere_" not in text
    assert bool(worker.events("metrics_namespace is fixed by the function")) == (namespace is not None)


async def test_process_metrics_compression_and_openmetrics(start_worker: WorkerFactory) -> None:
    worker = start_worker()
    await worker.wait_ready()

    plain = await _metrics(worker, **{"Accept-Encoding": "identity"})
    zipped = await _metrics(worker, **{"Accept-Encoding": "gzip"})
    open_metrics = await _metrics(worker, Accept="application/openmetrics-text; version=1.0.0")

    for family in ("process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds", "python_info"):
        assert family in plain.text
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.num_bytes_downloaded < len(plain.content)
    assert "process_resident_memory_bytes" in zipped.text  # decoded by httpx
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


async def _lock_follows(lock: Path, worker: WorkerProcess, expected: bool, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await asyncio.to_thread(lock.exists) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{lock} should {'exist' if expected else 'be gone'}:\n{worker.log_text()[-2000:]}")
        await asyncio.sleep(0.1)
    ready = (await worker.get("/_/ready")).status_code == 200
    assert ready == expected


async def test_the_readiness_lock_exists_exactly_while_ready_before_during_and_after_an_outage(
    tmp_path: Path, private_natsd: NatsServer, start_worker: WorkerFactory
) -> None:
    lock = tmp_path / ".lock"
    private_natsd.stop()
    worker = start_worker(nats_url=private_natsd.url, TMPDIR=str(tmp_path))

    await asyncio.sleep(2)  # serving probes, not connected
    assert (await worker.get("/_/health")).status_code == 200
    await _lock_follows(lock, worker, expected=False)
    private_natsd.start()
    await _lock_follows(lock, worker, expected=True)
    private_natsd.stop()
    await _lock_follows(lock, worker, expected=False)
    private_natsd.start()
    await _lock_follows(lock, worker, expected=True)
    assert await asyncio.to_thread(worker.terminate, 30) == 0
    assert not lock.exists()


async def test_callers_cannot_grow_the_metrics_with_function_names(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    async def known_unless_ghost(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=404 if request.path.startswith("/function/ghost-") else 200)

    gateway.default = known_unless_ghost
    worker = start_worker(max_function_series="50", max_inflight="100")
    await worker.wait_ready()
    names = [f"ghost-{i}" for i in range(300)] + [f"real-{i}" for i in range(300)]
    for name in names:
        await nc.publish(queue.subject, encode(QueueRequest(function=name, body=b"x")))
    await nc.flush()
    await wait_until(lambda: len(gateway.calls) == len(names), 60, "every call made")
    await wait_for_empty(nc, queue)

    scraped = (await worker.get("/metrics", metrics=True)).text
    labels = set(re.findall(r'function_name="([^"]*)"', scraped))

    # 50 functions of their own (none of them one the gateway did not know), the rest folded.
    assert "(other)" in labels
    own = labels - {"(other)", "all-functions"}
    assert len(own) == 50
    assert all(label.startswith("real-") and label.endswith(".openfaas-fn") for label in own)
    [ghosts] = [
        float(line.rpartition(" ")[2])
        for line in scraped.splitlines()
        if line.startswith("queue_worker_function_invocations_total{")
        and 'function_name="(other)"' in line
        and 'code="404"' in line
    ]
    assert ghosts == 300.0
