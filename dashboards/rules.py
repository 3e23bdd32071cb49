"""The PrometheusRule manifest, made from alerts.yml so the two never differ.

``python dashboards/rules.py`` (``make dashboards``) writes prometheus/prometheusrule.yaml;
a test checks that the committed manifest is what this makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
OUTPUT = HERE / "prometheus" / "prometheusrule.yaml"
HEADER = """\
# Made by dashboards/rules.py from dashboards/alerts.yml: edit that file, then `make dashboards`.
# For the Prometheus Operator (kube-prometheus-stack): label it for your Prometheus's
# ruleSelector (kube-prometheus-stack: release: <its release name>) and kubectl apply it.
"""


def manifest() -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "queue-worker",
            "namespace": "openfaas-fn",
            "labels": {"app.kubernetes.io/name": "queue-worker"},
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    return HEADER + yaml.safe_dump(manifest(), sort_keys=False, width=120)


if __name__ == "__main__":
    OUTPUT.write_text(render())
