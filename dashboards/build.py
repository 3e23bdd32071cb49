"""The queue-worker dashboard as code: ``python dashboards/build.py`` writes ``queue-worker.json``.

Grafana's classic JSON model. It works through every path a dashboard reaches Grafana by: the
Import button asks for the data source (``__inputs``), and file provisioning, the
kube-prometheus-stack sidecar and grafana-operator find it through the ``datasource`` variable.
``uid`` is stable, so re-importing replaces it. It keeps the rules of Grafana's dashboard linter
(a templated data source, ``job`` and ``instance`` variables matched by every query,
``$__rate_interval`` in every range, counters only through rate or increase, a unit, title and
description on every panel, not editable): ``tests/dashboards/test_dashboard.py`` checks them.

Every replica exports the stream-wide figures (pending, submitted, stream size), so those are
taken with ``max`` across replicas; what each replica does on its own (processed, in flight,
invocations) is summed. The committed JSON must equal what this file makes (a test checks it),
so edit here and run ``make dashboards``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("queue-worker.json")
#: Every panel and variable reads the data source the ``datasource`` variable holds.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: The classic-model schema of Grafana 10.4, the oldest version this dashboard asks for.
SCHEMA_VERSION = 39
GRAFANA_VERSION = "10.4.0"
#: Matched by every selector: the replicas chosen, then the queues and functions.
SCOPE = 'job=~"$job",instance=~"$instance"'
QUEUE = f'{SCOPE},queue_name=~"$queue"'
FUNCTION = f'{QUEUE},function_name=~"$function"'
#: What a stream-wide figure is labelled for the pending panel (every function together).
ALL_FUNCTIONS = 'function_name="all-functions"'


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


def _rate(by: str, metric: str, selector: str = QUEUE, over: str = "rate") -> str:
    """``sum by (...) (rate(metric{selector}[$__rate_interval]))``."""
    return f"sum by ({by}) ({over}({metric}{{{selector}}}[$__rate_interval]))"


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[Query, ...]:
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in ((0.95,) if by else (0.5, 0.95, 0.99))
    )


def _stream(metric: str) -> str:
    """A stream-wide gauge, the same on every replica: one value per queue."""
    return f"max by (queue_name) ({metric}{{{QUEUE}}})"


#: Row title, then its panels, two to a row of the grid.
SECTIONS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Queue",
        (
            Panel(
                "Ingestion rate per queue",
                "Requests accepted by the stream per second: what callers queue. Every replica reports the "
                "stream's own count, so this is the largest of them, not their sum.",
                (
                    Query(
                        "max by (queue_name) "
                        f"(rate(queue_worker_messages_submitted_total{{{QUEUE}}}[$__rate_interval]))",
                        "{{queue_name}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Processing rate per queue",
                "Messages finished per second (acked, terminated or dead-lettered), all replicas together. "
                "Below the ingestion rate for long, the backlog grows.",
                (Query(_rate("queue_name", "queue_worker_messages_processed_total"), "{{queue_name}}"),),
                unit="reqps",
            ),
            Panel(
                "Pending messages per queue",
                "Requests stored and not yet finished: waiting, waiting to retry, or running.",
                (
                    Query(
                        f"max by (queue_name) (queue_worker_pending_messages{{{QUEUE},{ALL_FUNCTIONS}}})",
                        "{{queue_name}}",
                    ),
                ),
            ),
            Panel(
                "Pending messages per function",
                "The same backlog by function_name, the label queue-based autoscaling joins on "
                "(all-functions when one consumer serves every function).",
                (Query(f"max by (function_name) (queue_worker_pending_messages{{{QUEUE}}})", "{{function_name}}"),),
            ),
            Panel(
                "Concurrency per function (function mode)",
                "Function mode: calls each function may have in flight, all replicas together (its adaptive "
                "limit: it falls after 429s and probes upward), beside the calls it has in flight.",
                (
                    Query(
                        f"sum by (function_name) (queue_worker_function_concurrency_limit{{{FUNCTION}}})",
                        "{{function_name}} limit",
                    ),
                    Query(
                        f"sum by (function_name) (queue_worker_function_inflight{{{FUNCTION}}})",
                        "{{function_name}} in flight",
                    ),
                ),
            ),
            Panel(
                "Oldest waiting request",
                "Age of the oldest request still stored (waiting, waiting to retry, or running). Growing "
                "steadily, nothing drains the queue.",
                (Query(_stream("queue_worker_oldest_message_age_seconds"), "{{queue_name}}"),),
                unit="s",
            ),
            Panel(
                "Stream size against its limits",
                "Messages and bytes stored in the work-queue stream, and its limits where it has them "
                "(at a limit the stream refuses new requests or drops old ones, as it is configured).",
                (
                    Query(_stream("queue_worker_stream_messages"), "{{queue_name}} messages"),
                    Query(_stream("queue_worker_stream_max_messages") + " > 0", "{{queue_name}} max messages"),
                    Query(_stream("queue_worker_stream_bytes"), "{{queue_name}} bytes"),
                    Query(_stream("queue_worker_stream_max_bytes") + " > 0", "{{queue_name}} max bytes"),
                ),
            ),
        ),
    ),
    (
        "Replicas",
        (
            Panel(
                "In-flight invocations per queue",
                "Calls running now, all replicas together; at max_inflight x replicas the workers are saturated.",
                (
                    Query(
                        f"sum by (queue_name) (queue_worker_function_invocation_inflight{{{QUEUE}}})", "{{queue_name}}"
                    ),
                ),
            ),
            Panel(
                "Saturation per replica",
                "Share of each replica's max_inflight slots that are busy; near 100% for long, requests wait "
                "for a slot.",
                (
                    Query(
                        f"sum by (instance) (queue_worker_handler_inflight{{{QUEUE}}})"
                        f" / sum by (instance) (queue_worker_max_inflight{{{QUEUE}}})",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Processing rate per replica",
                "Messages each replica finishes per second: how the work is shared.",
                (Query(_rate("instance", "queue_worker_messages_processed_total"), "{{instance}}"),),
                unit="reqps",
                stack=True,
            ),
            Panel(
                "In-flight invocations per function",
                "Which functions hold the running calls.",
                (
                    Query(
                        f"sum by (function_name) (queue_worker_function_invocation_inflight{{{FUNCTION}}})",
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
                "Error ratio",
                "Share of invocations answered with a status other than 2xx or 3xx, by function.",
                (
                    Query(
                        _rate(
                            "function_name",
                            "queue_worker_function_invocations_total",
                            f'{FUNCTION},code!~"[23].."',
                        )
                        + " / "
                        + _rate("function_name", "queue_worker_function_invocations_total", FUNCTION),
                        "{{function_name}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Invocation duration",
                "How long functions take to answer, p50, p95 and p99.",
                _quantiles("queue_worker_function_invocation_duration_seconds", FUNCTION),
                unit="s",
            ),
            Panel(
                "Invocation duration p95 per function",
                "The 95th percentile of each function's answer time.",
                _quantiles("queue_worker_function_invocation_duration_seconds", FUNCTION, by="function_name"),
                unit="s",
            ),
            Panel(
                "Queue wait before the first attempt",
                "From the gateway's X-Start-Time (else the stream's timestamp) to the first call: "
                "how long callers wait before work starts.",
                _quantiles("queue_worker_queue_wait_seconds", FUNCTION),
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
                "Requests moved to the dead-letter stream, by reason (exhausted, undecodable, invalid_request, "
                "expired, callback, callback_refused, limits, handler_error). Anything here needs a look, and "
                "perhaps a replay.",
                (Query(_rate("reason", "queue_worker_dead_letters_total", over="increase"), "{{reason}}"),),
                stack=True,
            ),
            Panel(
                "Dead-letter stream depth",
                "This queue's letters kept in the dead-letter stream, waiting to be looked at, replayed or purged.",
                (Query(_stream("queue_worker_dead_letter_messages"), "{{queue_name}}"),),
            ),
            Panel(
                "Callbacks",
                "Callback posts per second: ok, failed (retried on their own) or refused.",
                (Query(_rate("result", "queue_worker_callbacks_total"), "{{result}}"),),
                unit="reqps",
            ),
            Panel(
                "Consumer acknowledgements pending",
                "Messages delivered and not yet acknowledged (running, or waiting for a delayed retry), "
                "and those delivered more than once.",
                (
                    Query(_stream("queue_worker_consumer_ack_pending"), "{{queue_name}} ack pending"),
                    Query(_stream("queue_worker_consumer_redelivered"), "{{queue_name}} redelivered"),
                ),
            ),
            Panel(
                "NATS reconnects",
                "Times each replica reconnected to NATS; steady growth means an unstable connection.",
                (Query(_rate("instance", "queue_worker_nats_reconnect_total", over="increase"), "{{instance}}"),),
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
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
            },
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
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _datasource_variable() -> dict[str, Any]:
    """The data source, a variable: provisioning and operators resolve it; an import sets it."""
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
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
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "uid": "openfaas-queue-worker",
        "title": "OpenFaaS queue-worker (JetStream)",
        "description": "Queue depth, throughput, invocations, retries, dead letters and callbacks of the queue-worker.",
        "tags": ["openfaas", "nats", "jetstream", "queue-worker"],
        "editable": False,
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
                _datasource_variable(),
                _variable("job", "Job", "label_values(queue_worker_max_inflight, job)"),
                _variable("instance", "Instance", 'label_values(queue_worker_max_inflight{job=~"$job"}, instance)'),
                _variable(
                    "queue", "Queue", f"label_values(queue_worker_messages_processed_total{{{SCOPE}}}, queue_name)"
                ),
                _variable(
                    "function",
                    "Function",
                    f"label_values(queue_worker_function_invocations_total{{{QUEUE}}}, function_name)",
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
