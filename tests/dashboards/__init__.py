"""Tests of what ships for Prometheus and Grafana: dashboard, alerts, scrape configurations."""

from __future__ import annotations

import subprocess
import sys

from harness.worker import ROOT

DASHBOARDS = ROOT / "dashboards"


def rendered(module: str) -> str:
    """What ``dashboards/<module>.py`` makes, run as ``make dashboards`` runs it."""
    made = subprocess.run(
        [sys.executable, "-c", f"import {module}; print({module}.render(), end='')"],
        cwd=DASHBOARDS,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout
