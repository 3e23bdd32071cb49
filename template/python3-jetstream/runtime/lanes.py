"""Lanes: the consumers one worker pulls from, and what it knows of each. No I/O.

In ``static`` scaling mode there is one lane: the durable consumer ``nats_durable`` of the
whole queue. In ``function`` mode each function has its own subject in the queue's stream,
``<queue_name>.<name>.<namespace>``, and its own durable consumer, made on demand and deleted
by the server ``consumer_inactive_threshold`` after its last pull; the durable ``nats_durable``
then serves only the plain subject ``<queue_name>`` (the OpenFaaS gateway's format, callback
jobs, other publishers). Every lane is a key: ``""`` for the plain subject, ``name.namespace``
for a function.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .limiter import AdaptiveLimit
from .pulls import Pulls

#: The key of the plain queue subject's lane.
PLAIN = ""
#: A message header with which a publisher caps its function's calls at once in function mode
#: (the queue-worker's front door sets it from ``com.openfaas.queue.max_inflight``).
MAX_INFLIGHT_HEADER = "Queue-Max-Inflight"
#: Keys that name a consumer readably: Kubernetes names (DNS-1123 labels) never hold ``_``.
READABLE_KEY = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)?")
#: JetStream refuses longer consumer names.
MAX_CONSUMER_NAME = 255
#: Functions with pending-message series of their own (the most pending first); the rest are
#: added up under :data:`OTHER_FUNCTIONS`, so a flood of names cannot flood Prometheus.
MAX_PENDING_SERIES = 1000
OTHER_FUNCTIONS = "(other)"


def function_subject(queue_name: str, function: str, namespace: str) -> str | None:
    """The subject of ``function`` (``name`` or ``name.namespace``) in function mode, or ``None``
    when its name cannot be a subject token (it then goes on the plain subject, and is served
    there)."""
    name, _, own_namespace = function.partition(".")
    key = f"{name}.{own_namespace or namespace}"
    return f"{queue_name}.{key}" if READABLE_KEY.fullmatch(key) else None


def key_of(queue_name: str, subject: str) -> str | None:
    """The lane key of a stored message's ``subject``; ``None`` if it is not this queue's."""
    if subject == queue_name:
        return PLAIN
    prefix = queue_name + "."
    return subject[len(prefix) :] if subject.startswith(prefix) and len(subject) > len(prefix) else None


def consumer_name(durable: str, key: str) -> str:
    """The durable consumer of the lane ``key``: ``<durable>_<name>_<namespace>``; a key that
    is not a Kubernetes name is hashed (a consumer name cannot hold every subject character)."""
    if key == PLAIN:
        return durable
    if READABLE_KEY.fullmatch(key) and len(durable) + len(key) + 1 <= MAX_CONSUMER_NAME:
        return f"{durable}_{key.replace('.', '_')}"
    return f"{durable}_h{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def pending_by_function(
    queue_name: str, counts: Mapping[str, int], known: Iterable[str], limit: int = MAX_PENDING_SERIES
) -> dict[str, int]:
    """Messages stored per function key from the stream's per-subject ``counts``; the ``known``
    keys (lanes still kept) show 0 rather than vanish, so an autoscaler sees the queue empty."""
    stored = dict.fromkeys((key for key in known if key != PLAIN), 0)
    for subject, count in counts.items():
        key = key_of(queue_name, subject)
        if key:
            stored[key] = count
    if len(stored) <= limit:
        return stored
    ranked = sorted(stored.items(), key=lambda item: item[1], reverse=True)
    kept = dict(ranked[: limit - 1])
    kept[OTHER_FUNCTIONS] = sum(count for _, count in ranked[limit - 1 :])
    return kept


@dataclass(slots=True)
class Lane:
    """One consumer this worker pulls from, and its bookkeeping."""

    #: Its number in the pull inbox's reply subjects, so a status names the lane it is about.
    number: int
    key: str
    consumer: str
    #: The subject its pull requests go to.
    next_subject: str
    pulls: Pulls
    #: Adaptive concurrency, or ``None`` (the lane may use every slot).
    limit: AdaptiveLimit | None = None
    #: Handlers running, and messages held for a slot, of this lane.
    running: int = 0
    held: int = 0
    #: Messages the stream holds for it (function mode: from the per-subject counts).
    stored: int = 0
    #: The consumer exists (made or found) and can be pulled from.
    ready: bool = False
    #: A pull said the consumer or its stream is gone: make it again before pulling.
    missing: bool = False
    #: A request came back empty: what is stored waits for a later redelivery, so ask for one
    #: message at a time until one comes.
    dry: bool = False
    #: Since when it has had nothing stored, running or asked for (``None``: it has).
    idle_since: float | None = None
    #: Unlimited lanes (static mode) want every free slot, whatever the counts say.
    unlimited: bool = False
    #: The cap its messages carry (:data:`MAX_INFLIGHT_HEADER`), the latest one read.
    ceiling: int | None = None

    def cap(self, maximum: int) -> int:
        """How many calls it may have now: its adaptive limit, else ``maximum``, and never more
        than its messages' cap."""
        cap = maximum if self.limit is None else min(self.limit.limit, maximum)
        return cap if self.ceiling is None else min(cap, self.ceiling)

    def wants(self, maximum: int) -> int:
        """How many more messages to ask for now, within its cap (and, under an adaptive
        limit, a quarter more held ready, so a call that ends is followed at once rather than
        after a pull's round trip)."""
        if not self.ready or self.missing:
            return 0
        busy = self.running + self.held + self.pulls.outstanding
        cap = self.cap(maximum)
        room = cap - busy if self.limit is None else cap + max(1, cap // 4) - busy
        if self.unlimited:
            return room
        waiting = self.stored - self.running - self.held - self.pulls.outstanding
        if self.dry:
            waiting = min(waiting, 1 - self.pulls.outstanding)
        return max(0, min(room, waiting))
