"""The worker's series arrive intact in a real Prometheus scraping as the OpenFaaS charts do.

Kubernetes service discovery is played by file discovery: each target carries the
``__meta_kubernetes_*`` labels a function pod of the queue-worker would have, with the
annotations stack.yml gives it. The Pro chart's function-pod job is reproduced in its effect (keep
annotated function pods, then set ``function_name`` on every series from the pod's deployment),
beside the job this project ships, loaded from dashboards/prometheus/scrape-job.yml.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.client import Client

from harness.prometheus import Prometheus
from harness.publish import publish_request
from harness.servers import RecordingServer
from harness.worker import ROOT, WorkerProcess
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

pytestmark = pytest.mark.e2e
ANNOTATIONS = yaml.safe_load((ROOT / "stack.yml").read_text())["functions"]["queue-worker"]["annotations"]

#: What the Pro chart's openfaas-function-pods job does to a function pod's series.
CHART_FUNCTION_PODS_JOB: dict[str, Any] = {
    "job_name": "openfaas-function-pods",
    "relabel_configs": [
        {"source_labels": ["__meta_kubernetes_pod_labelpresent_faas_function"], "action": "keep", "regex": "true"},
        {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
        {
            "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "regex": "([^:]+)(?::\\d+)?;(\\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "kubernetes_namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "kubernetes_pod_name"},
        {
            "source_labels": ["kubernetes_pod_name"],
            "regex": "^([0-9a-zA-Z-]+)+(-[0-9a-zA-Z]+-[0-9a-zA-Z]+)$",
            "replacement": "$1",
            "target_label": "deployment_name",
        },
    ],
    "metric_relabel_configs": [
        {
            "source_labels": ["deployment_name", "kubernetes_namespace"],
            "separator": ";",
            "regex": "(.*);(.*)",
            "replacement": "${1}.${2}",
            "target_label": "function_name",
        }
    ],
}


def _pod(worker: WorkerProcess, scrape: str) -> dict[str, Any]:
    """A file-discovery target standing for the worker's pod."""
    return {
        "targets": ["127.0.0.1:1"],  # the port annotation decides, as in the cluster
        "labels": {
            "__meta_kubernetes_namespace": "openfaas-fn",
            "__meta_kubernetes_pod_name": "queue-worker-7d9c8b6f5-x2x7z",
            "__meta_kubernetes_pod_labelpresent_faas_function": "true",
            "__meta_kubernetes_pod_label_faas_function": "queue-worker",
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
            "__meta_kubernetes_pod_annotation_prometheus_io_port": str(worker.metrics_port),
            "__meta_kubernetes_pod_annotation_prometheus_io_path": ANNOTATIONS["prometheus.io.path"],
        },
    }


def _jobs(targets: Path) -> list[dict[str, Any]]:
    [ours] = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "scrape-job.yml").read_text())
    ours = {**ours, "scrape_interval": "1s"}
    del ours["kubernetes_sd_configs"]
    chart = dict(CHART_FUNCTION_PODS_JOB)
    for job in (ours, chart):
        job["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    return [ours, chart]


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(pods: list[dict[str, Any]]) -> Prometheus:
        targets = tmp_path / f"pods-{len(started)}.json"
        targets.write_text(json.dumps(pods))
        started.append(Prometheus(targets=[], scrape_configs=_jobs(targets)).start())
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.close()


async def _scraped(prometheus: Prometheus, job: str, timeout_s: float = 20.0) -> None:
    """Until ``job`` has scraped the worker and its invocation counters are in."""
    deadline = time.monotonic() + timeout_s
    while not await _series(prometheus, f'queue_worker_function_invocations_total{{job="{job}"}}'):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job} scraped nothing within {timeout_s}s")
        await asyncio.sleep(0.2)


async def _series(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    answer = await prometheus.query(expr)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_the_series_arrive_intact_under_the_charts_scrape_rules(
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    start_worker: WorkerFactory,
    prometheus_for: Any,
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    for i in range(3):
        await publish_request(nc, queue.subject, queued("figlet", f"f-{i}"))
    for i in range(2):
        await publish_request(nc, queue.subject, queued("nodeinfo", f"n-{i}"))
    await wait_for_empty(nc, queue)
    # The pod as stack.yml annotates it, and a second one annotated as the charts expect.
    as_shipped = prometheus_for([_pod(worker, ANNOTATIONS["prometheus.io.scrape"])])
    as_the_chart_wants = prometheus_for([_pod(worker, "true")])
    invocations = 'sum by (job, function_name) (queue_worker_function_invocations_total{{code="200",job="{}"}})'
    await _scraped(as_shipped, "openfaas-queue-worker")
    await _scraped(as_the_chart_wants, "openfaas-function-pods")
    shipped = await _series(as_shipped, invocations.format("openfaas-queue-worker"))
    mangled = await _series(as_the_chart_wants, invocations.format("openfaas-function-pods"))

    # As shipped: only this project's job scrapes the pod, and each function keeps its series.
    assert {(s["metric"]["job"], s["metric"]["function_name"], s["value"][1]) for s in shipped} == {
        ("openfaas-queue-worker", "figlet.openfaas-fn", "3"),
        ("openfaas-queue-worker", "nodeinfo.openfaas-fn", "2"),
    }
    assert await _series(as_shipped, 'up{job="openfaas-function-pods"}') == []
    assert (await _series(as_shipped, "up"))[0]["metric"]["kubernetes_pod_name"] == "queue-worker-7d9c8b6f5-x2x7z"
    # What the chart's job would have made of it: both functions under the worker's own name.
    assert [s["metric"]["function_name"] for s in mangled] == ["queue-worker.openfaas-fn"]
