"""The lock-free metrics expose exactly what prometheus_client's own would for the same updates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from runtime.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

BUCKETS = (0.005, 0.1, 1, 2.5, 60)
_labels = st.sampled_from(["a", "b", 'quote"d', "new\nline"])
_amounts = st.floats(min_value=0, max_value=100, allow_nan=False)
_updates = st.lists(st.tuples(_labels, _amounts), max_size=30)


def _exposition(
    updates: list[tuple[str, float]], make: type, loop: type, apply: str, **options: object
) -> tuple[bytes, bytes]:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as the runtime does
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = make("m", "Doc.", ["fn"], namespace="qw", registry=theirs_registry, **options)
    ours = loop("m", "Doc.", ["fn"], namespace="qw", registry=ours_registry, **options)
    for label, amount in updates:
        getattr(theirs.labels(label), apply)(amount)
        getattr(ours.labels(label), apply)(amount)
    return generate_latest(theirs_registry), generate_latest(ours_registry)


@given(_updates)
def test_a_counter_exposes_as_prometheus_clients(updates: list[tuple[str, float]]) -> None:
    theirs, ours = _exposition(updates, Counter, LoopCounter, "inc")
    assert ours == theirs


@given(_updates, st.sampled_from(["inc", "dec"]))
def test_a_gauge_exposes_as_prometheus_clients(updates: list[tuple[str, float]], apply: str) -> None:
    theirs, ours = _exposition(updates, Gauge, LoopGauge, apply)
    assert ours == theirs


@given(st.lists(st.tuples(_labels, st.sampled_from([0.0, 0.005, 0.0051, 1.0, 59.9, 60.0, 1e6]) | _amounts)))
def test_a_histogram_exposes_as_prometheus_clients(updates: list[tuple[str, float]]) -> None:
    # Bounds are inclusive: an observation equal to one counts in its bucket.
    theirs, ours = _exposition(updates, Histogram, LoopHistogram, "observe", buckets=BUCKETS)
    assert ours == theirs
