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


MODE_COLOURS = {"static": "#999999", "function": "#1f77b4"}


def draw_function_mode(report: dict[str, Any], folder: Path = HERE) -> Path:
    """Write ``function_mode.png``: the cold function's waits behind a hot backlog, the adaptive
    limit against the function's capacity, and throughput at scale; returns its path."""
    figure, (fair, adaptive, scale) = plt.subplots(1, 3, figsize=(16, 4.2))
    for mode, figures in report["fairness"].items():
        waits = figures["cold_waits_s"]
        fair.plot(waits, [(i + 1) / len(waits) for i in range(len(waits))], label=mode, color=MODE_COLOURS[mode])
    fair.set_xscale("log")
    fair.set_xlabel("cold call queued for (s)")
    fair.set_ylabel("share of the 100 cold calls")
    fair.set_title("100 cold calls behind 20,000 hot ones")
    function = report["adaptive"]["function"]
    timeline = function["timeline"]
    t = [point[0] for point in timeline]
    adaptive.step(t, [point[2] for point in timeline], where="post", label="function's capacity", color="#2ca02c")
    adaptive.plot(t, [point[1] for point in timeline], label="limit (function mode)", color=MODE_COLOURS["function"])
    refused = function.get("refused_per_s", [])
    if refused:
        adaptive.bar(range(len(refused)), refused, width=0.8, align="edge", label="429s per second", color="#d62728")
    adaptive.set_xlabel("s")
    adaptive.set_ylabel("calls at once; 429s per second")
    adaptive.set_title("adaptive concurrency, max_inflight 100")
    labels = list(report["scale"])
    scale.bar(
        [label.replace(", ", "\n") for label in labels],
        [report["scale"][label]["rate"] for label in labels],
        color=[MODE_COLOURS[label.split(",")[0]] for label in labels],
    )
    scale.set_ylabel("requests / s")
    scale.set_title("20,000 trivial calls, 100 in flight")
    scale.tick_params(axis="x", labelsize=8)
    for ax in (fair, adaptive, scale):
        ax.grid(True, alpha=0.3)
    fair.legend()
    adaptive.legend(fontsize=8)
    figure.tight_layout()
    path = folder / "function_mode.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    if "function_mode" in json.loads(RESULTS.read_text()):
        print(f"wrote {draw_function_mode(json.loads(RESULTS.read_text())['function_mode']).relative_to(HERE.parent)}")
    for path in draw(json.loads(RESULTS.read_text())):
        print(f"wrote {path.relative_to(HERE.parent)}")
    sys.exit(0)
