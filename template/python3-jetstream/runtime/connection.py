"""Connect to NATS (reconnecting forever) and make sure the stream and consumer exist."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from structlog.typing import FilteringBoundLogger

from .contract import ConsumerNeeds
from .errors import ConfigError, describe
from .settings import Settings
from .tasks import cancel_and_wait

#: JetStream's refusals of a second consumer on a work-queue stream (unfiltered, or overlapping).
WORK_QUEUE_TAKEN = frozenset({10099, 10100})
#: Function mode: consumers the stream may have, one per function with work (the server's
#: default for a stream that sets none is 1,000).
FUNCTION_CONSUMERS = 10_000
#: JetStream's answer to creating a consumer that exists with another configuration.
CONSUMER_EXISTS = 10148
#: The consumer metadata key naming the function that owns it.
OWNER = "owner"
#: Seconds between reconnect attempts to one server; the client cycles through the list.
RECONNECT_WAIT_S = 2


@dataclass(slots=True)
class ConnectionState:
    """What readiness depends on, updated by the client's callbacks and the consumer."""

    connected: bool = False
    bound: bool = False
    #: The consumer's pull requests are being answered (false while a link is unproven or the
    #: consumer is being recreated).
    consuming: bool = True
    #: Set before this worker closes the connection itself, so that is not logged as a fault.
    closing: bool = False


async def connect(
    settings: Settings,
    log: FilteringBoundLogger,
    state: ConnectionState,
    on_reconnect: Callable[[], None],
    on_lost: Callable[[], None],
) -> Client:
    """Connect, retrying the first connection too, and log every disconnect and reconnect.

    ``on_lost`` is called if the client closes for good without being asked to: nats-py does
    that on a protocol error from the server, and no reconnect follows.
    """

    async def disconnected() -> None:
        state.connected = False
        if not state.closing:
            log.warning("Disconnected from NATS")

    async def reconnected() -> None:
        state.connected = True
        on_reconnect()
        log.info("Reconnected to NATS", url=_redacted_url(client))

    refused = asyncio.get_running_loop().create_future()

    async def error(exc: Exception) -> None:
        log.warning("NATS connection error", error=describe(exc))
        if _is_refusal(exc) and not state.connected and not refused.done():
            refused.set_result(exc)

    async def closed() -> None:
        state.connected = False
        if not state.closing:
            log.error("NATS connection closed for good")
            on_lost()

    auth = settings.nats_auth
    log.info(
        "Connecting to NATS",
        servers=[_without_userinfo(s) for s in settings.nats_servers],
        auth=auth.mode,
        tls=auth.tls,
    )
    connecting = asyncio.ensure_future(
        nats.connect(
            servers=list(settings.nats_servers),
            name=settings.client_name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            # A half-open link (a partition, a frozen server) is noticed after this many missed
            # pings, not when TCP gives up minutes later.
            ping_interval=settings.ping_interval_s,
            max_outstanding_pings=settings.max_outstanding_pings,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            closed_cb=closed,
            **auth.options,
        )
    )
    # The first connection is retried forever, except when the server refuses the credentials:
    # retrying cannot help then, so start-up fails at once, naming the setting.
    await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        await cancel_and_wait(connecting)
        raise ConfigError("nats_auth", auth.mode, f"NATS refused these credentials ({refused.result()})")
    client = connecting.result()
    state.connected = True
    log.info("Connected to NATS", url=_redacted_url(client))
    return client


def _is_refusal(exc: Exception) -> bool:
    """The server refused the credentials (nats-py reports it as a plain error from the server)."""
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


async def ensure_topology(
    js: JetStreamContext, settings: Settings, log: FilteringBoundLogger, *, needs: ConsumerNeeds | None = None
) -> None:
    """Create the work-queue stream and the durable pull consumer when they are missing.

    Existing ones are used as they are, so an operator's tuning is never overwritten; where
    they differ from what this worker would create, the differences are logged once. An
    existing consumer that would strand messages (see :func:`consumer_problems`) is refused.

    Raises:
        ConfigError: the existing consumer cannot serve this worker, or belongs to another
            function; names ``nats_durable``.
    """
    needs = needs or ConsumerNeeds()
    functions = function_subjects(settings)
    wanted_stream = StreamConfig(
        name=settings.stream,
        # The per-function subjects always, so a function-mode replica can publish whatever
        # mode the others run in (an unfiltered static consumer takes them all).
        subjects=[settings.queue_name, functions],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        max_consumers=FUNCTION_CONSUMERS if settings.function_mode else None,
    )
    try:
        info = await js.stream_info(settings.stream)
        _log_differences(log, "stream", settings.stream, wanted_stream, info.config, ("retention", "num_replicas"))
        if settings.function_mode:
            await _fit_stream(js, settings, log, info.config)
    except NotFoundError:
        await js.add_stream(wanted_stream)
        log.info("Created stream", stream=settings.stream, subjects=wanted_stream.subjects)

    await _ensure_dead_letter_stream(js, settings, log)
    # Function mode: the per-function consumers take the rest.
    wanted_consumer = _pull_consumer(
        settings, settings.durable, needs.owner, settings.queue_name if settings.function_mode else None
    )
    try:
        found = await js.consumer_info(settings.stream, settings.durable)
    except NotFoundError:
        try:
            await js.add_consumer(settings.stream, wanted_consumer)
        except BadRequestError as exc:
            if exc.err_code not in WORK_QUEUE_TAKEN:
                raise
            # Another durable already consumes this work queue: a second one would split its
            # messages between two functions.
            raise ConfigError(
                "nats_durable",
                settings.durable,
                f"the work-queue stream {settings.stream} is consumed by another durable consumer already; "
                "give this function a queue_name of its own, or the nats_durable of the replicas it shares "
                "the work with",
            ) from None
        log.info("Created consumer", stream=settings.stream, durable=settings.durable)
        return
    problems = consumer_problems(found.config, settings, needs)
    if problems:
        raise ConfigError(
            "nats_durable",
            settings.durable,
            "the existing consumer would strand messages: "
            + "; ".join(problems)
            + ". Change it, or delete it and the worker creates one",
        )
    await _claim(js, settings, log, found.config, needs.owner)
    await _fit_filter(js, settings, log, found.config)
    _log_differences(log, "consumer", settings.durable, wanted_consumer, found.config, ("ack_wait",))
    pending = found.config.max_ack_pending
    if pending is not None and 0 < pending < settings.max_inflight:
        log.warning(
            "Existing consumer limits calls in flight",
            name=settings.durable,
            maxAckPending=pending,
            maxInflight=settings.max_inflight,
        )


async def _claim(
    js: JetStreamContext, settings: Settings, log: FilteringBoundLogger, config: ConsumerConfig, owner: str
) -> None:
    """Refuse a consumer another function owns; stamp an unowned one (made by hand, or by an
    older worker) with this function's name, changing nothing else."""
    found = (config.metadata or {}).get(OWNER)
    if not owner or found == owner:
        return
    if found:
        raise ConfigError(
            "nats_durable",
            settings.durable,
            f"the consumer belongs to the function {found!r} (its metadata says so) and this one is {owner!r}; "
            "give this function a nats_durable and queue_name of its own",
        )
    await js.add_consumer(
        settings.stream, dataclasses.replace(config, metadata={**(config.metadata or {}), OWNER: owner})
    )
    log.info("Claimed consumer", durable=settings.durable, owner=owner)


def function_subjects(settings: Settings) -> str:
    """The wildcard of every function's subject in function mode: ``<queue_name>.>``."""
    return f"{settings.queue_name}.>"


async def _fit_stream(
    js: JetStreamContext, settings: Settings, log: FilteringBoundLogger, config: StreamConfig
) -> None:
    """Function mode: make an existing stream take the per-function subjects, and as many
    consumers as functions may have work at once."""
    functions, subjects = function_subjects(settings), config.subjects or []
    wanted = dataclasses.replace(config, subjects=subjects if functions in subjects else [*subjects, functions])
    if (config.max_consumers or -1) < 0:
        # Unlimited in the stream's config still means the server's default, 1,000 (nats-server 2.15).
        wanted.max_consumers = FUNCTION_CONSUMERS
    elif config.max_consumers is not None and config.max_consumers < FUNCTION_CONSUMERS:
        log.warning(
            "The stream limits consumers: functions beyond it wait for another's consumer to go",
            stream=settings.stream,
            maxConsumers=config.max_consumers,
        )
    if wanted != config:
        await js.update_stream(wanted)
        log.info(
            "Stream ready for function mode",
            stream=settings.stream,
            subjects=wanted.subjects,
            maxConsumers=wanted.max_consumers,
        )


class FunctionConsumersRemain(nats.errors.Error):
    """Static mode cannot widen its consumer to every subject while per-function consumers exist."""

    def __str__(self) -> str:
        return (
            "per-function consumers of scaling_mode=function still exist; the consumer takes every function's "
            "subject once they are gone (consumer_inactive_threshold after the last function-mode worker stops)"
        )


async def _fit_filter(
    js: JetStreamContext, settings: Settings, log: FilteringBoundLogger, config: ConsumerConfig
) -> None:
    """Switch an existing durable consumer between the modes: in function mode it takes only the
    plain subject; in static mode, every subject again (once function mode's consumers are gone,
    since the subjects of a work queue's consumers must not overlap).

    Raises:
        FunctionConsumersRemain: static mode, and per-function consumers still take their subjects.
    """
    filters = [f for f in (config.filter_subject, *(config.filter_subjects or ())) if f]
    if settings.function_mode:
        if filters == [settings.queue_name]:
            return
        narrowed = dataclasses.replace(config, filter_subject=settings.queue_name, filter_subjects=None)
        await js.add_consumer(settings.stream, narrowed)
        log.info("Consumer takes the plain subject only", durable=settings.durable, subject=settings.queue_name)
        return
    if filters != [settings.queue_name]:
        return
    stream = await js.stream_info(settings.stream)
    if function_subjects(settings) not in (stream.config.subjects or []):
        return
    try:
        await js.add_consumer(settings.stream, dataclasses.replace(config, filter_subject=None, filter_subjects=None))
    except BadRequestError as exc:
        if exc.err_code not in WORK_QUEUE_TAKEN:
            raise
        raise FunctionConsumersRemain() from None
    log.info("Consumer takes every subject again", durable=settings.durable)


async def ensure_function_consumer(js: JetStreamContext, settings: Settings, key: str, name: str, owner: str) -> None:
    """Make (or find) the durable consumer ``name`` of one function's subject, which the server
    deletes ``consumer_inactive_threshold`` after its last pull."""
    config = _pull_consumer(settings, name, owner, f"{settings.queue_name}.{key}")
    config.inactive_threshold = settings.consumer_inactive_threshold_s
    try:
        await js.add_consumer(settings.stream, config)
    except BadRequestError as exc:
        # Made by a replica with other settings: it serves all the same.
        if exc.err_code != CONSUMER_EXISTS:
            raise


def _pull_consumer(settings: Settings, name: str, owner: str, filter_subject: str | None) -> ConsumerConfig:
    """A durable pull consumer as this worker makes them: explicit acks, no cap on deliveries
    (the worker counts attempts itself) or on messages in flight (``max_inflight`` is the cap)."""
    return ConsumerConfig(
        durable_name=name,
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=-1,
        max_waiting=512,
        metadata={OWNER: owner} if owner else None,
    )


def consumer_problems(config: ConsumerConfig, settings: Settings, needs: ConsumerNeeds) -> list[str]:
    """What in an existing consumer keeps a message from finishing as this worker means it to.
    Pure.

    A push consumer or one that does not ack explicitly never reaches this worker's pull loop
    or settles messages its own way; a filter for another subject leaves this queue's messages
    to wait forever; fewer deliveries than the worker retries make the server drop a message
    silently, with no callback and no dead letter.
    """
    problems = []
    if config.deliver_subject:
        problems.append(f"it is a push consumer (deliver_subject={config.deliver_subject!r}), not a pull consumer")
    if config.ack_policy not in (None, AckPolicy.EXPLICIT):
        problems.append(f"ack_policy is {config.ack_policy}, not explicit")
    filters = [f for f in (config.filter_subject, *(config.filter_subjects or ())) if f]
    if filters and settings.queue_name not in filters:
        problems.append(f"it filters {filters}, not queue_name={settings.queue_name!r}")
    needed, because = max(
        (needs.min_deliver, needs.because), (settings.handler_error_attempts, "handler_error_attempts")
    )
    if config.max_deliver not in (None, -1, 0) and config.max_deliver < needed:
        problems.append(f"max_deliver={config.max_deliver}, and a message may need {needed} deliveries ({because})")
    return problems


async def _ensure_dead_letter_stream(js: JetStreamContext, settings: Settings, log: FilteringBoundLogger) -> None:
    """One dead-letter stream serves every queue (a subject each); it keeps what it is given
    until an operator replays or purges it, and nothing consumes it."""
    try:
        await js.stream_info(settings.dead_letter_stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=settings.dead_letter_stream,
                subjects=[f"{settings.dead_letter_stream}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=settings.stream_replicas,
            )
        )
        log.info("Created stream", stream=settings.dead_letter_stream, subject=f"{settings.dead_letter_stream}.>")


def _log_differences(
    log: FilteringBoundLogger, kind: str, name: str, wanted: object, found: object, fields: tuple[str, ...]
) -> None:
    for attribute in fields:
        want, have = getattr(wanted, attribute), getattr(found, attribute)
        if want != have:
            log.warning(f"Existing {kind} differs from settings", name=name, field=attribute, want=want, have=have)


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _redacted_url(client: Client) -> str:
    url = client.connected_url
    return "" if url is None else _without_userinfo(url.geturl())
