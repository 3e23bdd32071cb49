"""The dashboard: its JSON is what the code makes, and a real Prometheus answers every query."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.prometheus import Prometheus
from harness.publish import publish_request
from harness.servers import RecordingServer, answer, wait_until
from tests.dashboards import DASHBOARDS, rendered
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

DASHBOARD = json.loads((DASHBOARDS / "queue-worker.json").read_text())


def test_the_committed_json_is_what_the_code_makes() -> None:
    assert rendered("build") == (DASHBOARDS / "queue-worker.json").read_text()


def test_the_dashboard_works_imported_and_provisioned() -> None:
    assert DASHBOARD["__inputs"][0]["pluginId"] == "prometheus"
    assert DASHBOARD["uid"] == "openfaas-queue-worker"
    [datasource] = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    # An import binds ${DS_PROMETHEUS}; provisioning falls back to the default Prometheus.
    assert datasource["current"]["value"] == "${DS_PROMETHEUS}"
    assert "${DS_PROMETHEUS}" not in json.dumps(DASHBOARD["panels"])
    grafana = next(r["version"] for r in DASHBOARD["__requires"] if r["id"] == "grafana")
    assert (grafana, DASHBOARD["schemaVersion"]) == ("10.4.0", 39)  # 10.4 writes schemaVersion 39
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


#: Units the dashboard linter accepts that these panels use.
UNITS = {"short", "reqps", "s", "percentunit", "bytes"}


def _panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_the_dashboard_keeps_the_dashboard_linters_rules() -> None:
    """grafana/dashboard-linter's default rules (lint/rules.go), one by one."""
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    # template-datasource-rule
    assert (variables["datasource"]["label"], variables["datasource"]["query"]) == ("Data source", "prometheus")
    # template-job-rule, template-instance-rule
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["datasource"]["uid"] == "${datasource}"
        assert (variable["type"], variable["label"], variable["multi"], variable["allValue"]) == (
            "query",
            name.title(),
            True,
            ".+",
        )
    # template-on-time-change-reload-rule
    assert all(v["refresh"] == 2 for v in variables.values() if v["type"] == "query")
    # uneditable-dashboard
    assert DASHBOARD["editable"] is False
    for panel in _panels():
        # panel-datasource-rule, panel-title-description-rule, panel-units-rule, panel-no-targets-rule
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["title"]
        assert panel["description"]
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["options"]["legend"]["calcs"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # target-rate-interval-rule: every range is $__rate_interval (outside quoted matchers)
            assert set(re.findall(r"\[([^\]]+)\]", re.sub(r'"[^"]*"', '""', expr))) <= {"$__rate_interval"}, expr
            # target-job-rule, target-instance-rule: every selector matches $job and $instance
            selectors = re.findall(r"([a-z_:]+)(\{[^}]*\})?(?=\s*(?:\[|\)|$|/|>|\*|\+|-))", expr)
            for metric, matchers in selectors:
                if metric.startswith("queue_worker_"):
                    assert 'job=~"$job"' in matchers, (metric, expr)
                    assert 'instance=~"$instance"' in matchers, (metric, expr)
            # target-counter-agg-rule: a counter only through rate, irate or increase
            for counter in re.finditer(r"\w+_total\{", expr):
                assert re.search(r"(?:rate|increase)\($", expr[: counter.start()]), expr


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
    return (
        expr.replace("$queue", queue)
        .replace("$function", ".+")
        .replace("$job", ".+")
        .replace("$instance", ".+")
        .replace("$__rate_interval", "1m")
    )


def _flaky() -> object:
    calls = {"n": 0}

    async def behaviour(request: web.Request, body: bytes) -> web.Response:
        calls["n"] += 1
        return web.Response(status=503 if calls["n"] == 1 else 200, text="eventually")

    return behaviour


def _as_totals(expr: str) -> str:
    """The panel's query with each rate or increase replaced by the counter itself: what the
    panel integrates to over the whole run, to be compared with what the test did."""
    return re.sub(r"(?:rate|increase)\((\w+\{[^}]*\})\[\$__rate_interval\]\)", r"\1", expr)


def _panel(title: str) -> list[str]:
    return [t["expr"] for p in _panels() if p["title"] == title for t in p["targets"]]


async def _values(prometheus: Prometheus, expr: str, label: str) -> dict[str, float]:
    answered = await prometheus.query(expr)
    assert answered["status"] == "success", (expr, answered.get("error"))
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in answered["data"]["result"]}


#: Series only function mode exports (tests/e2e/test_function_mode.py checks the panel's queries).
FUNCTION_MODE_ONLY = ("queue_worker_function_concurrency_limit", "queue_worker_function_inflight")


@pytest.mark.e2e
async def test_every_panel_with_two_replicas_and_two_queues_shows_what_happened(
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    # Given two replicas on one queue and one on another, which saw successes, a retry, a
    # failure, a refused callback and an undecodable message
    other = Queue(stream=f"{queue.stream}-b", subject=f"{queue.subject}-b", durable=f"{queue.durable}-b")
    settings = {"max_retry_attempts": "2", "callback_retry_attempts": "1", "stream_metrics_interval": "200ms"}
    workers = [start_worker(**settings), start_worker(**settings), start_worker(**settings, **other.env())]
    gateway.behaviours["flaky"] = _flaky()  # type: ignore[assignment]
    gateway.behaviours["broken"] = answer(500, "broken")
    for worker in workers:
        await worker.wait_ready()
    mine = [
        *(queued("echo", f"ok-{i}", receiver.url + "/cb") for i in range(6)),
        queued("flaky", "retry-1", receiver.url + "/cb"),
        queued("broken", "fail-1", receiver.url + "/cb"),
        queued("echo", "lost-cb", "http://127.0.0.1:1/nowhere"),
    ]
    for request in mine:
        await publish_request(nc, queue.subject, request)
    await nc.jetstream().publish(queue.subject, b"not a request")
    for i in range(3):
        await publish_request(nc, other.subject, queued("echo", f"b-{i}", receiver.url + "/cb"))
    await wait_for_empty(nc, queue)
    await wait_for_empty(nc, other)
    # The requests, the undecodable message, and the job the failed callback became.
    published = len(mine) + 2

    # When Prometheus has scraped every replica a few times since
    server = Prometheus([f"127.0.0.1:{worker.metrics_port}" for worker in workers])
    await asyncio.to_thread(server.start)
    try:
        processed = f'sum(queue_worker_messages_processed_total{{queue_name="{queue.subject}"}})'

        async def caught_up() -> bool:
            done = await _values(server, processed, "")
            letters = await _values(server, "max(queue_worker_dead_letter_messages)", "")
            return done.get("") == published and letters.get("") == 3

        await _poll(caught_up, 30)
        await asyncio.sleep(1.5)

        # Then every panel query answers, and the panels' figures are what happened
        for name, expr in _queries():
            answered = await server.query(_fill(expr, queue.subject))
            assert answered["status"] == "success", (name, answered.get("error"))
            if _empty_here(expr):
                continue
            assert answered["data"]["result"], f"{name}: no data for {_fill(expr, queue.subject)}"

        async def total(title: str, label: str, index: int = 0) -> dict[str, float]:
            return await _values(server, _fill(_as_totals(_panel(title)[index]), queue.subject), label)

        # Ingestion: the stream's count once, not once per replica.
        assert await total("Ingestion rate per queue", "queue_name") == {queue.subject: published}
        assert await total("Processing rate per queue", "queue_name") == {queue.subject: published}
        per_replica = await total("Processing rate per replica", "instance")
        assert (len(per_replica), sum(per_replica.values())) == (2, published)
        assert await total("Pending messages per queue", "queue_name") == {queue.subject: 0}
        assert await total("Dead letters", "reason") == {"undecodable": 1, "exhausted": 1, "callback": 1}
        assert await total("Dead-letter stream depth", "queue_name") == {queue.subject: 3}
        invocations = await _values(
            server,
            _fill(_as_totals(_panel("Invocations by status")[0].replace("function_name, code", "code")), queue.subject),
            "code",
        )
        assert invocations == {"200": 8, "503": 1, "500": 2}
        assert await total("Callbacks", "result") == {"ok": 8, "failed": 1}
        errors = await _values(server, _fill(_as_totals(_panel("Error ratio")[0]), queue.subject), "function_name")
        assert errors == {"broken.openfaas-fn": 1.0, "flaky.openfaas-fn": 0.5}
        saturation = await total("Saturation per replica", "instance")
        assert sorted(saturation.values()) == [0.0, 0.0]
        # The other queue's figures stay out of this queue's panels, and show in its own.
        assert await total("Processing rate per queue", "queue_name", 0) == {queue.subject: published}
        other_processed = await _values(
            server, _fill(_as_totals(_panel("Processing rate per queue")[0]), other.subject), "queue_name"
        )
        assert other_processed == {other.subject: 3}
        # And the variables' own queries list the queues, the replicas and the functions
        for variable in DASHBOARD["templating"]["list"]:
            if variable["type"] != "query":
                continue
            metric, label = re.fullmatch(r"label_values\((\w+)(?:\{.*\})?, (\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
            found = await _values(server, f"count by ({label}) ({metric})", label)
            expected = {"queue": 2, "instance": 3, "job": 1}.get(variable["name"])
            assert len(found) == expected if expected else found, variable["name"]
    finally:
        server.close()


def _empty_here(expr: str) -> bool:
    """Queries with nothing to show in this test: the streams have no limits, and these workers
    run in static mode (tests/e2e/test_function_mode.py reads function mode's families)."""
    return any(part in expr for part in ("max messages", "max_bytes", "max_messages", *FUNCTION_MODE_ONLY))


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
        f'queue_worker_function_invocations_total{{code="200",function_name="echo.openfaas-fn",{q}}} {count}.0'
        in exposition
    )
    assert f'queue_worker_callbacks_total{{{q},result="ok"}} {count}.0' in exposition
    assert f'queue_worker_queue_wait_seconds_count{{function_name="echo.openfaas-fn",{q}}} {count}.0' in exposition
    assert f"queue_worker_nats_reconnect_total{{{q}}} 0.0" in exposition
    assert 'queue_worker_build_info{python="' in exposition
    assert "_created" not in exposition
