"""The queue-worker dashboard as code: ``python dashboards/build.py`` writes ``queue-worker.json``.

Grafana's classic JSON model, ready for Dashboards > New > Import: the data source is asked for
on import (``__inputs``), ``uid`` is stable so re-importing replaces it, and ``$queue`` and
``$function`` filter every panel. The committed JSON must equal what this file makes (a test
checks it), so edit here and run ``make dashboards``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("queue-worker.json")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
#: The latest classic-model schema version Grafana migrates to.
SCHEMA_VERSION = 42
QUEUE = 'queue_name=~"$queue"'
FUNCTION = 'function_name=~"$function"'


@dataclass(frozen=True)
class Query:
    """One PromQL query and the legend of its series."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A time series panel: what it tells the operator, in which unit."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    stack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _rate(by: str, metric: str, selector: str = "", over: str = "rate") -> str:
    """``sum by (...) (rate(metric{selector}[$__rate_interval]))``."""
    return f"sum by ({by}) ({over}({metric}{{{selector}}}[$__rate_interval]))"


def _quantiles(metric: str, selector: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


#: Row title, then its panels, two to a row of the grid.
SECTIONS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Queue",
        (
            Panel(
                "Ingestion rate per queue",
                "Requests accepted by the stream per second: what callers queue.",
                (Query(_rate("queue_name", "queue_worker_messages_submitted_total", QUEUE), "{{queue_name}}"),),
                unit="reqps",
            ),
            Panel(
                "Processing rate per queue",
                "Messages finished per second (acked, terminated or dead-lettered), all replicas together. "
                "Below the ingestion rate for long, the backlog grows.",
                (Query(_rate("queue_name", "queue_worker_messages_processed_total", QUEUE), "{{queue_name}}"),),
                unit="reqps",
            ),
            Panel(
                "Pending messages per queue",
                "Requests stored and not yet finished: waiting, waiting to retry, or running.",
                (Query(f"avg by (queue_name) (queue_worker_pending_messages{{{QUEUE}}})", "{{queue_name}}"),),
            ),
            Panel(
                "Pending messages per function",
                "The same backlog by function_name, the label queue-based autoscaling joins on "
                "(all-functions when one consumer serves every function).",
                (Query(f"avg by (function_name) (queue_worker_pending_messages{{{QUEUE}}})", "{{function_name}}"),),
            ),
            Panel(
                "In-flight invocations per queue",
                "Calls running now, all replicas together; at max_inflight x replicas the workers are saturated.",
                (
                    Query(
                        f"sum by (queue_name) (queue_worker_function_invocation_inflight{{{QUEUE}}})",
                        "{{queue_name}}",
                    ),
                ),
            ),
            Panel(
                "In-flight invocations per function",
                "Which functions hold the running calls.",
                (
                    Query(
                        f"sum by (function_name) (queue_worker_function_invocation_inflight{{{QUEUE},{FUNCTION}}})",
                        "{{function_name}}",
                    ),
                ),
                stack=True,
            ),
        ),
    ),
    (
        "Functions",
        (
            Panel(
                "Invocations by status",
                "Function answers per second by status code; 503 includes a gateway that could not be reached.",
                (
                    Query(
                        _rate("function_name, code", "queue_worker_function_invocations_total", FUNCTION),
                        "{{function_name}} {{code}}",
                    ),
                ),
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Invocation duration",
                "How long functions take to answer, p50, p95 and p99.",
                _quantiles("queue_worker_function_invocation_duration_seconds", FUNCTION),
                unit="s",
            ),
            Panel(
                "Queue wait before the first attempt",
                "From the gateway's X-Start-Time (else the stream's timestamp) to the first call: "
                "how long callers wait before work starts.",
                _quantiles("queue_worker_queue_wait_seconds", f"{QUEUE},{FUNCTION}"),
                unit="s",
            ),
            Panel(
                "Retries scheduled",
                "Invocations sent back to wait for another attempt, by function and the status that caused it.",
                (
                    Query(
                        _rate("function_name, code", "queue_worker_function_retries_total", FUNCTION),
                        "{{function_name}} {{code}}",
                    ),
                ),
                unit="reqps",
            ),
        ),
    ),
    (
        "Delivery",
        (
            Panel(
                "Dead letters",
                "Requests kept in the dead-letter stream, by reason (exhausted, undecodable, expired, callback). "
                "Anything here needs a look, and perhaps a replay.",
                (Query(_rate("reason", "queue_worker_dead_letters_total", QUEUE, over="increase"), "{{reason}}"),),
                stack=True,
            ),
            Panel(
                "Callbacks",
                "Callback posts per second: ok, or failed (retried on their own).",
                (Query(_rate("result", "queue_worker_callbacks_total"), "{{result}}"),),
                unit="reqps",
            ),
            Panel(
                "Consumer acknowledgements pending",
                "Messages delivered and not yet acknowledged (running, or waiting for a delayed retry), "
                "and those delivered more than once.",
                (
                    Query(f"avg by (queue_name) (queue_worker_consumer_ack_pending{{{QUEUE}}})", "ack pending"),
                    Query(f"avg by (queue_name) (queue_worker_consumer_redelivered{{{QUEUE}}})", "redelivered"),
                ),
            ),
            Panel(
                "NATS reconnects",
                "Times the workers reconnected to NATS; steady growth means an unstable connection.",
                (Query("sum(increase(queue_worker_nats_reconnect_total[$__rate_interval]))", "reconnects"),),
            ),
        ),
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "custom": {"fillOpacity": 10, "stacking": {"mode": "normal" if panel.stack else "none"}},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend, "refId": chr(ord("A") + i)}
            for i, q in enumerate(panel.queries)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _layout() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, section in SECTIONS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for index, panel in enumerate(section):
            panels.append(_panel(panel, len(panels) + 1, 12 * (index % 2), y + 8 * (index // 2)))
        y += 8 * ((len(section) + 1) // 2)
    return panels


def dashboard() -> dict[str, Any]:
    """The whole dashboard."""
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the queue-worker",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "uid": "openfaas-queue-worker",
        "title": "OpenFaaS queue-worker (JetStream)",
        "description": "Queue depth, throughput, invocations, retries, dead letters and callbacks of the queue-worker.",
        "tags": ["openfaas", "nats", "jetstream", "queue-worker"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                _variable("queue", "Queue", "label_values(queue_worker_messages_processed_total, queue_name)"),
                _variable(
                    "function", "Function", "label_values(queue_worker_function_invocations_total, function_name)"
                ),
            ]
        },
        "panels": _layout(),
    }


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}", file=sys.stderr)
