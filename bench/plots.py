"""The figures of ``bench/results.json`` as PNG images for the README: throughput and worker CPU
per message, by ``max_inflight`` and by body size, the worker beside the hand-written loop.

Run by ``make bench`` after the measurements, or alone (``python -m bench.plots``) to redraw
from the last results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
COLOURS = {"queue-worker": "#1f77b4", "hand-written": "#999999"}


def _series(results: list[dict[str, Any]], prefix: str, key: str) -> dict[str, list[tuple[float, float]]]:
    """``(x, value)`` per implementation, for the scenarios whose name starts with ``prefix``."""
    found: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r["scenario"].startswith(prefix):
            x = r["inflight"] if prefix.startswith("trivial") else r.get("body_bytes", 0) / 1024
            value = r[key] * 1000 if key == "cpu_s_per_1000" else r[key]  # s per 1000 -> µs per message
            found.setdefault(r["implementation"], []).append((x, value))
    return {impl: sorted(points) for impl, points in found.items()}


def _plot(ax: Any, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str) -> None:
    for impl, points in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=impl, color=COLOURS.get(impl))
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()


def draw(report: dict[str, Any], folder: Path = HERE) -> list[Path]:
    """Write ``throughput.png`` and ``cpu.png``; returns their paths."""
    results = report["results"]
    written = []
    for key, name, ylabel in (
        ("rate", "throughput.png", "requests / s"),
        ("cpu_s_per_1000", "cpu.png", "worker CPU µs / message"),
    ):
        figure, (by_slots, by_size) = plt.subplots(1, 2, figsize=(11, 4))
        _plot(by_slots, _series(results, "trivial", key), "max_inflight", ylabel, "trivial function, by max_inflight")
        _plot(by_size, _series(results, "body", key), "body KiB", ylabel, "100 in flight, by body size")
        figure.tight_layout()
        path = folder / name
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in draw(json.loads(RESULTS.read_text())):
        print(f"wrote {path.relative_to(HERE.parent)}")
    sys.exit(0)
