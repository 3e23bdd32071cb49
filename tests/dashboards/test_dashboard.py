"""The dashboard: its JSON is what the code makes, and a real Prometheus answers every query."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.prometheus import Prometheus
from harness.publish import publish_request
from harness.servers import RecordingServer, answer, wait_until
from harness.worker import ROOT, WorkerProcess
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

DASHBOARDS = ROOT / "dashboards"
DASHBOARD = json.loads((DASHBOARDS / "queue-worker.json").read_text())


def test_the_committed_json_is_what_the_code_makes() -> None:
    made = subprocess.run(
        [sys.executable, "-c", "import build; print(build.render(), end='')"],
        cwd=DASHBOARDS,
        capture_output=True,
        text=True,
        check=True,
    )

    assert made.stdout == (DASHBOARDS / "queue-worker.json").read_text()


def test_the_dashboard_imports_as_is() -> None:
    assert DASHBOARD["__inputs"][0]["pluginId"] == "prometheus"
    assert DASHBOARD["uid"] == "openfaas-queue-worker"
    assert DASHBOARD["schemaVersion"] >= 39
    assert [v["name"] for v in DASHBOARD["templating"]["list"]] == ["queue", "function"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert panel["description"]


def _queries() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def _fill(expr: str, queue: str) -> str:
    """Fill the variables as Grafana would with one queue and every function selected.

    The test's queue names hold no regular-expression metacharacters, so they go in as they are.
    """
    return expr.replace("$queue", queue).replace("$function", ".*").replace("$__rate_interval", "1m")


@pytest.fixture
def worker(start_worker: WorkerFactory) -> WorkerProcess:
    return start_worker(
        max_retry_attempts="2",
        callback_retry_attempts="1",
        stream_metrics_interval="200ms",
    )


@pytest.fixture
async def prometheus(worker: WorkerProcess) -> AsyncIterator[Prometheus]:
    server = Prometheus([f"127.0.0.1:{worker.metrics_port}"])
    await asyncio.to_thread(server.start)
    yield server
    server.close()


def _flaky() -> object:
    calls = {"n": 0}

    async def behaviour(request: web.Request, body: bytes) -> web.Response:
        calls["n"] += 1
        return web.Response(status=503 if calls["n"] == 1 else 200, text="eventually")

    return behaviour


@pytest.mark.e2e
async def test_prometheus_answers_every_panel_query_while_the_worker_runs(
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    worker: WorkerProcess,
    prometheus: Prometheus,
) -> None:
    # Given a worker that has seen successes, a retry, a failure, dead letters and both kinds of callback
    gateway.behaviours["flaky"] = _flaky()  # type: ignore[assignment]
    gateway.behaviours["broken"] = answer(500, "broken")
    await worker.wait_ready()
    for request in [
        queued("echo", "ok-1", receiver.url + "/cb"),
        queued("flaky", "retry-1", receiver.url + "/cb"),
        queued("broken", "fail-1", receiver.url + "/cb"),
        queued("echo", "lost-cb", "http://127.0.0.1:1/nowhere"),
    ]:
        await publish_request(nc, queue.subject, request)
    await nc.jetstream().publish(queue.subject, b"not a request")
    await wait_for_empty(nc, queue)

    # When Prometheus has scraped it a few times since
    up = f'queue_worker_messages_processed_total{{queue_name="{queue.subject}"}}'

    async def scraped() -> bool:
        result = (await prometheus.query(f"count_over_time({up}[1m])"))["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= 5

    await _poll(scraped, 30)

    # Then every panel query, with the variables filled in, is accepted and returns data
    for name, expr in _queries():
        answered = await prometheus.query(_fill(expr, queue.subject))
        assert answered["status"] == "success", (name, answered.get("error"))
        assert answered["data"]["result"], f"{name}: no data for {_fill(expr, queue.subject)}"
    # And the variables' own queries list this queue and its functions
    for variable in DASHBOARD["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
        answered = await prometheus.query(f"count by ({label}) ({metric})")
        assert {r["metric"][label] for r in answered["data"]["result"]}, variable["name"]


async def _poll(predicate: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.25)):
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"not true within {timeout_s}s")


@pytest.mark.e2e
async def test_the_exposition_passes_promtool_and_counts_exactly(
    nc: Client, queue: Queue, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(stream_metrics_interval="100ms")
    await worker.wait_ready()
    count = 7
    for i in range(count):
        await publish_request(nc, queue.subject, queued("echo", f"n-{i}", receiver.url + "/cb"))
    await wait_for_empty(nc, queue)
    await wait_until(lambda: len(receiver.calls) == count, 10, "callbacks")
    await asyncio.sleep(0.3)  # a stream-state refresh or two

    exposition = (await worker.get("/metrics", metrics=True)).text
    checked = await asyncio.to_thread(
        subprocess.run, ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    q = f'queue_name="{queue.subject}"'
    assert f"queue_worker_messages_processed_total{{{q}}} {count}.0" in exposition
    assert f"queue_worker_messages_submitted_total{{{q}}} {count}.0" in exposition
    assert f'queue_worker_pending_messages{{function_name="all-functions",{q}}} 0.0' in exposition
    assert (
        f'queue_worker_function_invocations_total{{code="200",function_name="echo.openfaas-fn"}} {count}.0'
        in exposition
    )
    assert f'queue_worker_callbacks_total{{result="ok"}} {count}.0' in exposition
    assert f'queue_worker_queue_wait_seconds_count{{function_name="echo.openfaas-fn",{q}}} {count}.0' in exposition
    assert "queue_worker_nats_reconnect_total 0.0" in exposition
    assert 'queue_worker_build_info{python="' in exposition
    assert "_created" not in exposition
