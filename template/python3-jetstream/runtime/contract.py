"""What a function sees, and what it returns.

A function module defines ``async def handle(event, context)`` and, optionally,
``async def on_startup(context)`` and ``async def on_shutdown(context)``. ``handle`` returns
an :data:`Outcome` (or ``None``, which means :class:`Ack`); the runtime turns it into the
matching JetStream acknowledgement. An outcome marked ``overloaded`` says what the message was
for refused it for want of capacity: in function mode that lowers the function's adaptive
concurrency limit. Raising is allowed: the runtime logs the traceback and
redelivers the message after a delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from aiohttp import web
from nats.aio.client import Client
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from .errors import NotConnected
from .settings import Settings


@dataclass(frozen=True, slots=True)
class Event:
    """One JetStream message, as delivered to ``handle``."""

    #: The message payload, untouched.
    data: bytes
    #: NATS message headers (the first value of each).
    headers: Mapping[str, str]
    subject: str
    #: The message's sequence number in its stream.
    stream_seq: int
    #: 1 on first delivery; the server's delivery count, so it survives worker restarts.
    attempt: int
    #: When the message was stored in the stream.
    published_at: datetime


@dataclass(frozen=True, slots=True)
class Ack:
    """Done: remove the message from the work queue."""

    reason: str = "ok"
    overloaded: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver the message again after ``delay_s`` seconds; nothing waits in memory meanwhile."""

    delay_s: float
    reason: str = "retry"
    overloaded: bool = False


@dataclass(frozen=True, slots=True)
class Terminate:
    """Never deliver the message again (it is removed from a work queue stream)."""

    reason: str = "terminated"
    overloaded: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Store the message in the dead-letter stream, then remove it from the work queue.

    ``reason`` is a short, bounded label (it becomes a metric label); ``detail`` is kept in the
    dead letter beside the original message, for people and for replay tools.
    """

    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    overloaded: bool = False


Outcome: TypeAlias = Ack | Retry | Terminate | DeadLetter
#: The owner of a consumer made by a function that declares no ``NAME``.
UNNAMED = "unnamed"


class Link:
    """The NATS connection as it is now: none before connecting or after closing."""

    def __init__(self) -> None:
        self.client: Client | None = None

    def nats(self) -> Client:
        """The connected client.

        Raises:
            NotConnected: not connected now (not yet, reconnecting, or closed).
        """
        client = self.client
        if client is None or not client.is_connected:
            raise NotConnected("not connected to NATS")
        return client


@dataclass(slots=True)
class ConsumerNeeds:
    """What the function needs of its durable consumer, checked when the worker binds to one
    that exists already: ``on_startup`` raises ``min_deliver`` when it redelivers on purpose
    (the queue-worker's retries are redeliveries)."""

    min_deliver: int = 1
    #: Which setting asks for ``min_deliver``, for the error that names it.
    because: str = ""
    #: Whose consumer it is (``NAME`` in handler.py): stored in the consumer's metadata when the
    #: worker creates it, and a consumer owned by another function is refused, so a function
    #: pointed at another's ``nats_durable`` cannot take its messages.
    owner: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    """What the runtime shares with a function: settings, a logger, metrics and state.

    ``state`` is the function's own: ``on_startup`` puts long-lived resources there (an HTTP
    client, say) and ``handle`` and ``on_shutdown`` take them out again.
    """

    settings: Settings
    #: Bound with the message's ``delivery`` and ``streamSeq`` inside ``handle``.
    log: FilteringBoundLogger
    #: Register the function's own metrics here; they are served on ``metrics_port``.
    registry: CollectorRegistry
    state: dict[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    link: Link = field(default_factory=Link)
    needs: ConsumerNeeds = field(default_factory=ConsumerNeeds)

    def bind(self, **fields: Any) -> Context:
        """Return a copy whose logger carries ``fields`` as well."""
        # Built directly rather than with dataclasses.replace: this runs for every message.
        return Context(
            self.settings, self.log.bind(**fields), self.registry, self.state, self.environ, self.link, self.needs
        )

    def nats(self) -> Client:
        """The NATS client, for JetStream or key-value use of the function's own.

        Raises:
            NotConnected: not connected right now.
        """
        return self.link.nats()

    async def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Publish a follow-up message (a job for later, say) and wait until a stream stores it.

        Raises:
            NotConnected: not connected right now.
            nats.errors.Error: the stream did not confirm it.
        """
        await self.nats().jetstream().publish(subject, data, headers=dict(headers) if headers else None)


class Handle(Protocol):
    """The function's required entry point."""

    def __call__(self, event: Event, context: Context) -> Awaitable[Outcome | None]: ...


Hook: TypeAlias = Callable[[Context], Awaitable[None]]
#: Returns aiohttp routes to serve beside the probes on ``port``.
Routes: TypeAlias = Callable[[Context], Iterable[web.AbstractRouteDef]]


@dataclass(frozen=True, slots=True)
class Function:
    """A loaded function module: its ``handle`` and optional hooks.

    ``on_startup`` runs before anything connects (validate settings, open clients there);
    ``on_connect`` runs once the consumer is bound (create key-value buckets there), and again
    every 2 s while it raises a NATS error or times out, so running it twice must be harmless;
    ``http_routes`` adds routes to the server on ``port``; ``on_shutdown`` runs last.
    """

    handle: Handle
    on_startup: Hook | None = None
    on_connect: Hook | None = None
    on_shutdown: Hook | None = None
    http_routes: Routes | None = None
    #: ``METRICS_NAMESPACE`` in handler.py: the prefix of the runtime's metric names, whatever
    #: ``metrics_namespace`` says (a function whose metric names are a contract fixes them).
    metrics_namespace: str | None = None
    #: ``NAME`` in handler.py: who owns the durable consumer (see :class:`ConsumerNeeds`).
    name: str = UNNAMED
    #: ``ENV_DEFAULTS`` in handler.py: settings the function defaults itself (the environment
    #: still wins); the template's own defaults name no queue, stream or consumer.
    env_defaults: Mapping[str, str] = field(default_factory=dict)
