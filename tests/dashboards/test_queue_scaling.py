"""Queue-based autoscaling: the OpenFaaS chart's recording rule, fed with what a function-mode
worker really exports, gives each queue-scaled function its backlog (``promtool test rules``)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from nats.aio.client import Client

from harness.publish import publish_request
from harness.servers import RecordingServer
from harness.worker import WorkerProcess
from tests.support import Queue, WorkerFactory, queued

pytestmark = pytest.mark.e2e
RULES = Path(__file__).resolve().parent / "openfaas-queue-scaling.yml"
RECORDED = "job:function_current_load:sum"
PENDING = re.compile(r"^queue_worker_pending_messages\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


async def _pending_series(worker: WorkerProcess, want: dict[str, float]) -> dict[str, float]:
    """The worker's pending-message series (label text -> value) once they show ``want``."""
    series: dict[str, float] = {}
    for _ in range(100):
        text = (await worker.get("/metrics", metrics=True)).text
        series = {m["labels"]: float(m["value"]) for m in PENDING.finditer(text)}
        by_function = {re.search(r'function_name="([^"]*)"', k)[1]: v for k, v in series.items()}  # type: ignore[index]
        if all(by_function.get(name) == value for name, value in want.items()):
            return series
        await asyncio.sleep(0.1)
    raise AssertionError(f"pending series never showed {want}: {series}")


async def test_the_charts_rule_records_each_queue_scaled_functions_backlog(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request, body: bytes) -> web.Response:
        await release.wait()
        return web.Response(text="ok")

    gateway.default = held
    worker = start_worker(max_inflight="1", scaling_mode="function", stream_metrics_interval="200ms")
    await worker.wait_ready()
    for function, count in (("resize", 4), ("thumbs", 6)):
        for i in range(count):
            await publish_request(nc, f"{queue.subject}.{function}.openfaas-fn", queued(function, f"{function}-{i}"))
    series = await _pending_series(worker, {"resize.openfaas-fn": 4, "thumbs.openfaas-fn": 6, "all-functions": 10})
    release.set()

    # Two replicas report the same stream-wide figures, as the chart's pod job labels them.
    input_series = [
        {"series": f'queue_worker_pending_messages{{{labels},kubernetes_pod_name="{pod}"}}', "values": f"{value:g}x5"}
        for labels, value in series.items()
        for pod in ("queue-worker-a", "queue-worker-b")
    ]
    # resize scales on its queue; thumbs on requests per second (the rule leaves it alone).
    input_series += [
        {
            "series": 'gateway_service_target_load{function_name="resize.openfaas-fn",scaling_type="queue"}',
            "values": "10x5",
        },
        {
            "series": 'gateway_service_target_load{function_name="thumbs.openfaas-fn",scaling_type="rps"}',
            "values": "50x5",
        },
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {
                        "expr": "job:function_current_load:sum",
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": RECORDED + '{function_name="resize.openfaas-fn",scaling_type="queue"}',
                                "value": 4,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    tests = tmp_path / "queue-scaling-test.yml"
    tests.write_text(yaml.safe_dump(test))
    done = await asyncio.to_thread(
        subprocess.run, ["promtool", "test", "rules", str(tests)], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_is_the_one_the_chart_ships() -> None:
    rule = yaml.safe_load(RULES.read_text())["groups"][0]["rules"][0]

    assert rule["record"] == "job:function_current_load:sum"
    assert "avg(queue_worker_pending_messages{}) by (function_name)" in rule["expr"]
