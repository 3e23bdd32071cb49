"""Bookkeeping for pull requests kept open ahead of need, with no I/O.

The consumer keeps pull requests waiting on the server for every free slot, so each message is
handed over the moment it arrives. It does not wait for a batch to fill, as a fetch does (at a
steady trickle that adds up to ``batch / rate`` of latency to a message). :class:`Pulls` counts
what has been asked for and not yet come. Each request has its own reply subject, so the server's status
for it (408 when it expires, 409 when it is refused, 503 when no consumer answers) says which
request ended and, usually, how many of its messages never came. (Deliveries carry their
message's own subject, so which request brought one is not known: they are counted together.)

Requests are bounded by bytes as well as by count (JetStream's ``max_bytes``): the server
writes what a request asks for to the connection as fast as it can, and a connection with more
than its ``max_pending`` (64 MiB by default) unread is cut as a slow consumer, so 100 slots of
1 MiB messages must not be asked for at once. Each request may bring :data:`PULL_BYTES`, or one
message of the server's ``max_payload`` if that is more; a new request is made only once an
eighth of the slots is free, so at most eight requests are delivering at once: 32 MiB at the
default ``max_payload`` of 1 MiB. A request that reaches its bytes ends with a 409 that says how
many of its messages it did not send, as an expired one does.

A request carries ``max_bytes`` only where it is needed: when its batch of the largest messages
could exceed it, and when every slot's message at once could exceed :data:`CONNECTION_BYTES`
(so never below 32 slots, at the default ``max_payload``). The server ends every request that
has ``max_bytes`` with a status message (409 Batch Completed) once its batch is delivered; at
one slot that is a second message for every one delivered, for the server to send and the
worker to parse. At 1 in flight, leaving it out took the worker from 504 to 453 µs of CPU a
message, and 5.7% more messages a second (six pairs run in turn, by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How long after its expiry a request is still remembered, for a late status about it.
GRACE_S = 1.0
#: Bytes one pull request may bring, unless the server's max payload needs more.
PULL_BYTES = 4 * 1024 * 1024
#: What the server may have to write to the connection at once: half its ``max_pending``.
CONNECTION_BYTES = 8 * PULL_BYTES
#: Room for a message's subject, reply subject and framing beside ``max_payload``.
MESSAGE_OVERHEAD = 4096


def refill_at(max_inflight: int) -> int:
    """Ask only once this many slots are free (an eighth of them, rounded up), so that a stream
    of completions does not become a stream of one-message requests: at most that share of the
    slots idles while a request is on its way, and a backlog still comes in few requests.

    Rounded up, so that no more than eight requests can be open at once: rounded down, 63
    slots made it 7, and nine requests of 4 MiB (36 MiB) could deliver at once, past the
    :data:`CONNECTION_BYTES` the requests' ``max_bytes`` are sized for (a property test found
    it)."""
    return max(1, (max_inflight + 7) // 8)


def free_slots(max_inflight: int, busy: int, outstanding: int) -> int:
    """How many messages to ask for now, with ``busy`` slots running or held and
    ``outstanding`` messages asked for (0 until :func:`refill_at` slots are free)."""
    free = max_inflight - busy - outstanding
    return free if free >= refill_at(max_inflight) else 0


@dataclass
class Pulls:
    """The open requests of one consumer: how many messages are asked for and not yet delivered."""

    expires_s: float
    #: The ``max_bytes`` of each request: at least one message of the largest size must fit.
    max_bytes: int = PULL_BYTES
    #: Room for the largest message the server takes: its max payload and :data:`MESSAGE_OVERHEAD`.
    largest: int = 1024 * 1024 + MESSAGE_OVERHEAD
    #: How many messages may be asked for at once, across the connection (``max_inflight``).
    slots: int = 1 << 31
    outstanding: int = 0
    _open: dict[str, tuple[int, float]] = field(default_factory=dict)
    _next_id: int = 0

    @classmethod
    def for_payload(cls, expires_s: float, max_payload: int = 1024 * 1024, slots: int = 1 << 31) -> Pulls:
        """Requests of :data:`PULL_BYTES`, or of one message of ``max_payload`` if that is more,
        for ``slots`` messages at once at most."""
        largest = max_payload + MESSAGE_OVERHEAD
        return cls(expires_s, max_bytes=max(PULL_BYTES, largest), largest=largest, slots=slots)

    def bound(self, batch: int) -> int:
        """The ``max_bytes`` to ask ``batch`` messages with: 0 (none) when ``batch`` messages of
        the largest size fit within :attr:`max_bytes` anyway, or the messages of every slot
        within :data:`CONNECTION_BYTES`."""
        largest = self.largest
        if batch * largest <= self.max_bytes or self.slots * largest <= CONNECTION_BYTES:
            return 0
        return self.max_bytes

    def asked(self, batch: int, now: float) -> str:
        """Record a request for ``batch`` messages; returns its id (the reply subject's last token)."""
        self._forget_expired(now)
        request_id = str(self._next_id)
        self._next_id += 1
        self._open[request_id] = (batch, now + self.expires_s)
        self.outstanding += batch
        return request_id

    def delivered(self) -> None:
        """One message arrived."""
        self.outstanding = max(0, self.outstanding - 1)

    def ended(self, request_id: str, undelivered: int | None) -> int:
        """The server ended a request, with ``undelivered`` messages of it never sent; ``None``
        when it did not say (a refused request: then none of it was sent). Returns how many
        the request asked for (0 if it is not remembered)."""
        batch, _ = self._open.pop(request_id, (0, 0.0))
        missing = batch if undelivered is None else undelivered
        self.outstanding = max(0, self.outstanding - missing)
        return batch

    def lost(self) -> None:
        """Every open request is gone (the server restarted, say): start counting afresh."""
        self._open.clear()
        self.outstanding = 0

    def _forget_expired(self, now: float) -> None:
        # Requests that got all their messages end without a status; expiry order is insertion
        # order, so the oldest are at the front.
        while self._open:
            request_id, (_, expires_at) = next(iter(self._open.items()))
            if expires_at + GRACE_S > now:
                return
            del self._open[request_id]
