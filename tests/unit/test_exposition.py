"""``/metrics`` as the runtime writes it is byte for byte what prometheus_client writes, for any
family, labels, values and format a scraper asks for."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Counter, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from runtime.exposition import Registry, render
from runtime.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

#: What scrapers send: nothing, the text format, OpenMetrics in each escaping, a version the
#: runtime leaves to the library, and Prometheus's own list.
ACCEPTS = [
    "",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
]

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ['quote"d', "back\\slash", "new\nline", ""]
)
_amounts = st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.sampled_from([0.0, 1e-9, 1e21, math.inf])


@st.composite
def _registry(draw: st.DrawFn) -> Registry:
    """Loop families of each kind, with a library collector among them, and their updates."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as the runtime does
    registry = Registry()
    families = draw(st.lists(st.sampled_from(["counter", "gauge", "histogram", "library"]), min_size=1, max_size=5))
    for index, kind in enumerate(families):
        labelnames = draw(st.lists(_names.filter(lambda n: n != "le"), max_size=3, unique=True))
        name, doc = f"m{index}", draw(st.sampled_from(["Doc.", 'A "quoted"\nhelp \\ text.', ""]))
        if kind == "library":
            library = Counter(name, doc, labelnames, namespace="qw", registry=registry)
            for _ in range(draw(st.integers(0, 3))):
                values = draw(st.tuples(*[_values] * len(labelnames)))
                (library.labels(*values) if labelnames else library).inc(draw(_amounts))
            continue
        family: LoopCounter | LoopGauge | LoopHistogram
        if kind == "counter":
            family = LoopCounter(name, doc, labelnames, namespace="qw", registry=registry)
        elif kind == "gauge":
            family = LoopGauge(name, doc, labelnames, namespace="qw", registry=registry)
        else:
            buckets = draw(st.lists(st.floats(0.001, 1e6), min_size=1, max_size=4, unique=True))
            family = LoopHistogram(name, doc, labelnames, buckets=buckets, namespace="qw", registry=registry)
        for _ in range(draw(st.integers(0, 4))):
            values, amount = draw(st.tuples(*[_values] * len(labelnames))), draw(_amounts)
            if isinstance(family, LoopHistogram):
                family.labels(*values).observe(amount)
            elif isinstance(family, LoopGauge):
                family.labels(*values).dec(amount)  # below zero too
            else:
                family.labels(*values).inc(amount)
    return registry


@settings(max_examples=300)
@given(_registry(), st.sampled_from(ACCEPTS), st.integers(1, 3))
def test_a_scrape_is_written_as_prometheus_client_writes_it(registry: Registry, accept: str, scrapes: int) -> None:
    encoder, content_type = choose_encoder(accept)

    # Later scrapes write from the label strings the first one kept.
    for _ in range(scrapes):
        assert render(registry, accept) == (encoder(registry), content_type)


def test_a_scrape_for_some_names_is_the_librarys() -> None:
    registry = Registry()
    LoopCounter("kept", "Doc.", ["fn"], namespace="qw", registry=registry).labels("a").inc()
    LoopGauge("left", "Doc.", [], namespace="qw", registry=registry).labels().inc()

    body, _ = render(registry, "", ["qw_kept_total"])

    assert body == b'# HELP qw_kept_total Doc.\n# TYPE qw_kept_total counter\nqw_kept_total{fn="a"} 1.0\n'
