"""The body of ``/metrics``: prometheus_client's formats, with the event loop's own families
(:mod:`.loop_metrics`) written by those families.

Why not prometheus_client's encoder alone: it validates, escapes and sorts every sample's labels
at every scrape, and builds a sample object for each first. A scrape runs on the event loop, so
no call moves meanwhile. The loop families keep each child's label string from its first
scrape, and write their lines from it. With 200 functions' series (the default
``max_function_series``, 7,667 lines), in one run of ``python -m bench.scrape`` on a slow spell
of the machine: 127.8 ms with the library's text format and 246.8 ms with its OpenMetrics (which
Prometheus asks for first), against 13.0 and 12.9 ms written here.

What stays prometheus_client's: choosing the format from ``Accept``, every other collector
(each written by the library on its own, in the registry's order), and the scrapes written in
other ways (``escaping=dots`` or ``values``, which rewrite names; another OpenMetrics version;
the ``name[]`` filter). The tests compare what this writes with what the library writes, byte for
byte.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.registry import Collector

from .loop_metrics import LoopFamily

_EOF = b"# EOF\n"
#: Escapings that leave legacy names as they are (all the loop families' names are) in both
#: formats. (``values`` rewrites OpenMetrics' sample names, ``qw_m_total`` as ``U__qw__m__total``.)
_PLAIN_ESCAPINGS = frozenset({UNDERSCORES, ALLOWUTF8})


class Registry(CollectorRegistry):
    """A registry that keeps its collectors in the order they were registered, as the library
    writes them, so that each can be written on its own."""

    def __init__(self) -> None:
        super().__init__()
        self._in_order: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._in_order.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._in_order.remove(collector)

    def collectors(self) -> list[Collector]:
        return list(self._in_order)


def render(registry: CollectorRegistry, accept: str, names: list[str] | None = None) -> tuple[bytes, str]:
    """The body answering a scrape that sent ``accept`` (and asked only for ``names``, with
    ``name[]``), and its content type."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = _written_here(encoder)
    if names is not None:
        return encoder(registry.restricted_registry(names)), content_type
    if openmetrics is None or not isinstance(registry, Registry) or registry.get_target_info():
        return encoder(registry), content_type
    parts: list[bytes] = []
    for collector in registry.collectors():
        if isinstance(collector, LoopFamily):
            parts.append(collector.exposition(openmetrics).encode())
        else:
            written = encoder(collector)
            parts.append(written[: -len(_EOF)] if openmetrics else written)
    if openmetrics:
        parts.append(_EOF)
    return b"".join(parts), content_type


def _written_here(encoder: Callable[[Collector], bytes]) -> bool | None:
    """Whether the chosen format is OpenMetrics 1.0.0 (``True``) or the text format (``False``),
    in an escaping the loop families write; ``None`` for anything else."""
    function, options = (encoder.func, encoder.keywords) if isinstance(encoder, partial) else (encoder, {})
    if options.get("escaping", UNDERSCORES) not in _PLAIN_ESCAPINGS:
        return None
    if function is text_latest:
        return False
    if function is om_latest and options.get("version", "1.0.0") == "1.0.0":
        return True
    return None
