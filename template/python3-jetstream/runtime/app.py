"""The process: settings, logs, the function, NATS, probes, the consumer, and a clean stop.

``main()`` is what the image runs. SIGTERM (or SIGINT) stops pulling, lets running calls
finish within ``shutdown_timeout``, hands unstarted messages back, drains the connection so
every acknowledgement reaches the server, and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    disable_created_metrics,
)
from structlog.typing import FilteringBoundLogger

from . import exposition, logs, probes
from .connection import ConnectionState, FunctionConsumersRemain, connect, ensure_function_consumer, ensure_topology
from .consumer import Consumer
from .contract import ConsumerNeeds, Context, Function
from .dead_letters import DeadLetters
from .errors import EXIT_CONFIG, ConfigError, HandlerLoadError, describe
from .lane_metrics import LaneCollector
from .loader import load_function
from .metrics import RuntimeMetrics
from .settings import Settings
from .stream_state import StreamStateCollector, refresh, subject_counts
from .tasks import cancel_and_wait

T = TypeVar("T")

#: Exit status when the NATS client closed for good on its own.
EXIT_CONNECTION_LOST = 1
#: How long the last acknowledgements may take to reach the server at shutdown.
FLUSH_TIMEOUT_S = 5
#: Pause between attempts to create or bind the stream and consumer.
TOPOLOGY_RETRY_S = 2.0
#: Attempts between two reports that the server has no JetStream (a minute).
JETSTREAM_OFF_REPEAT = 30
#: Container allocations between young-generation collections, at least and per slot in flight
#: (CPython's default is 700). One message allocates hundreds, so the default collects every few
#: messages, and each collection walks every call in flight: about a tenth of the CPU at full
#: rate at 100 in flight, and a fifth at 1000, which `make bench` shows.
GC_YOUNG_THRESHOLD = 10_000
GC_YOUNG_PER_SLOT = 50


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the connector until SIGTERM; returns the exit status."""
    environ = dict(os.environ if environ is None else environ)
    # Until the settings are read, errors go out in the encoding asked for if it is valid.
    encoding = "json" if environ.get("log_encoding", "").strip().lower() == "json" else "console"
    early_log = logs.configure(encoding=encoding, debug=False)
    default_dir = Path(sys.argv[0]).resolve().parent / "function"
    try:
        function = load_function(Path(environ.get("handler_dir") or default_dir))
    except HandlerLoadError as exc:
        early_log.error("Cannot load the function", error=str(exc))
        return EXIT_CONFIG
    environ = {**function.env_defaults, **environ}
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        return _invalid(early_log, exc)
    log = logs.configure(encoding=settings.log_encoding, debug=settings.debug)
    return _run(serve(settings, function, log, environ))


async def serve(settings: Settings, function: Function, log: FilteringBoundLogger, environ: Mapping[str, str]) -> int:
    """Run everything in this event loop until a signal, and return the exit status."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stopping, log, signum)
    # One series per metric, not two: the *_created timestamps only double what is scraped.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
    registry = exposition.Registry()
    # process_* (restarts, memory, open files) and python_* (version, GC), as every exporter has.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    namespace = function.metrics_namespace or settings.metrics_namespace
    if namespace != settings.metrics_namespace and "metrics_namespace" in environ:
        log.warning("metrics_namespace is fixed by the function", using=namespace, ignored=settings.metrics_namespace)
    settings = dataclasses.replace(settings, metrics_namespace=namespace)
    metrics = RuntimeMetrics.create(settings.metrics_namespace, settings.queue_name, registry)
    metrics.max_inflight.labels(settings.queue_name).set(settings.max_inflight)
    state = ConnectionState()
    context = Context(
        settings=settings, log=log, registry=registry, environ=environ, needs=ConsumerNeeds(owner=function.name)
    )
    # The function validates its own settings here, before anything starts.
    try:
        if function.on_startup is not None:
            await function.on_startup(context)
    except ConfigError as exc:
        return _invalid(log, exc)
    log.info("Starting", maxInflight=settings.max_inflight, stream=settings.stream, durable=settings.durable)
    routes = function.http_routes(context) if function.http_routes is not None else ()
    served = await probes.start(
        "0.0.0.0",
        (
            (probes.probe_app(state, stopping.is_set, routes), settings.port),
            (probes.metrics_app(registry), settings.metrics_port),
        ),
    )
    lock = asyncio.create_task(probes.keep_lock(probes.lock_path(environ), state, stopping.is_set))
    log.info("Serving", port=settings.port, metricsPort=settings.metrics_port, probes="/_/health /_/ready")
    lost = asyncio.Event()

    def on_lost() -> None:
        # No reconnect follows: stop, and exit non-zero so the orchestrator starts a fresh worker.
        lost.set()
        stopping.set()

    client: Client | None = None
    try:
        client = await _until_stopped(connect(settings, log, state, metrics.reconnects.inc, on_lost), stopping)
        context.link.client = client
        if client is not None:
            await _consume(client, function, context, metrics, state, stopping)
        return EXIT_CONNECTION_LOST if lost.is_set() else 0
    except ConfigError as exc:  # NATS refused the credentials
        return _invalid(log, exc)
    finally:
        state.bound = False
        state.closing = True
        await _shut_down(function, context, client, log)
        await cancel_and_wait(lock)
        await served.close()
        log.info("Stopped")


def _invalid(log: FilteringBoundLogger, exc: ConfigError) -> int:
    """One line naming the variable, and the exit status for a bad setting."""
    log.error("Invalid configuration", error=str(exc), variable=exc.variable)
    return EXIT_CONFIG


async def _consume(
    client: Client,
    function: Function,
    context: Context,
    metrics: RuntimeMetrics,
    state: ConnectionState,
    stopping: asyncio.Event,
) -> None:
    """Bind to the consumer (creating what is missing) and consume until stopped."""
    settings, log = context.settings, context.log
    js = client.jetstream()

    async def rebind() -> None:
        await ensure_topology(js, settings, log, needs=context.needs)

    if not await _until_stopped(_prepare(rebind, client, log), stopping):
        return
    if function.on_connect is not None and not await _until_stopped(_on_connect(function, context), stopping):
        return
    state.bound = True
    log.info("Subscribed", stream=settings.stream, durable=settings.durable)

    async def ensure_lane(key: str, name: str) -> None:
        await ensure_function_consumer(js, settings, key, name, context.needs.owner)

    async def read_counts() -> Mapping[str, int]:
        return await subject_counts(client, settings.stream)

    consumer = Consumer(
        settings=settings,
        function=function,
        context=context,
        client=client,
        metrics=metrics,
        dead_letters=DeadLetters(js, subject=settings.dead_letter_subject, max_payload=client.max_payload),
        stopping=stopping,
        state=state,
        rebind=rebind,
        read_counts=read_counts,
        ensure_lane=ensure_lane,
    )
    collector = StreamStateCollector(
        settings.metrics_namespace, settings.queue_name, functions=consumer.pending_by_function
    )
    context.registry.register(collector)
    if settings.function_mode:
        context.registry.register(
            LaneCollector(settings.metrics_namespace, settings.queue_name, consumer, settings.max_inflight)
        )
    refresher = asyncio.create_task(refresh(js, settings, collector, log))
    keep_gc_off_the_hot_path(settings.max_inflight)
    try:
        await consumer.run()
    finally:
        await cancel_and_wait(refresher)


def keep_gc_off_the_hot_path(max_inflight: int) -> None:
    """Freeze what start-up built (modules, settings, clients: never garbage) so that no
    collection walks it again, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, GC_YOUNG_PER_SLOT * max_inflight), middle, old)


async def _prepare(rebind: Callable[[], Awaitable[None]], client: Client, log: FilteringBoundLogger) -> bool:
    """Ensure the stream and consumer, retrying while JetStream is not ready; True when done.

    A server without JetStream (OpenFaaS CE's own NATS has none) answers no JetStream request:
    that is said in one line, repeated once a minute, not as an error every two seconds.
    """
    attempts = 0
    while True:
        try:
            await rebind()
            return True
        except (TimeoutError, nats.errors.Error) as exc:
            if isinstance(exc, FunctionConsumersRemain):
                if attempts % JETSTREAM_OFF_REPEAT == 0:
                    log.warning("Waiting for function mode's consumers to go", reason=str(exc))
            elif isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
                if attempts % JETSTREAM_OFF_REPEAT == 0:
                    log.error(
                        "JetStream is not enabled",
                        server=_server(client),
                        fix="deploy NATS with JetStream enabled (OpenFaaS CE's own NATS has none), e.g. the NATS "
                        "Helm chart with config.jetstream.enabled=true, and point nats_host or nats_url at it",
                    )
            else:
                log.warning("JetStream not ready", error=describe(exc), retryIn=TOPOLOGY_RETRY_S)
            attempts += 1
            await asyncio.sleep(TOPOLOGY_RETRY_S)


async def _on_connect(function: Function, context: Context) -> bool:
    """Run the function's ``on_connect`` until NATS takes what it asks; True when done.

    While NATS refuses it or does not answer (a key-value bucket a JetStream cluster cannot place
    until its peers are back, say), the process stays up and not ready and asks again: exiting
    would hand the wait to the orchestrator's restart back-off, which grows to minutes.
    """
    assert function.on_connect is not None
    while True:
        try:
            await function.on_connect(context)
            return True
        except (TimeoutError, nats.errors.Error) as exc:
            context.log.warning("Function not ready", error=describe(exc), retryIn=TOPOLOGY_RETRY_S)
            await asyncio.sleep(TOPOLOGY_RETRY_S)


def _server(client: Client) -> str:
    url = client.connected_url
    return "" if url is None else f"{url.hostname}:{url.port}"


async def _until_stopped(work: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """Await ``work`` unless ``stopping`` is set first, in which case cancel it and return None."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(task, waiter)
    return task.result() if not task.cancelled() else None


async def _shut_down(function: Function, context: Context, client: Client | None, log: FilteringBoundLogger) -> None:
    if function.on_shutdown is not None:
        try:
            await function.on_shutdown(context)
        except Exception:
            log.exception("on_shutdown failed")
    if client is not None and not client.is_closed:
        try:
            # A PING round trip after the last ack proves every ack reached the server.
            await client.flush(timeout=FLUSH_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("Flush failed", error=describe(exc))
        await client.close()


def _on_signal(stopping: asyncio.Event, log: FilteringBoundLogger, signum: int) -> None:
    if not stopping.is_set():
        log.info("Stopping", signal=signal.Signals(signum).name)
    stopping.set()


def _run(main_coroutine: Coroutine[None, None, int]) -> int:
    """Run on uvloop where it is installed (as in the image), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)
