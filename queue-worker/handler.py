"""The queue-worker as a python3-jetstream function: wiring only.

``on_startup`` reads the settings and builds the transports (one for invocations, one for
callbacks, guarded), the call-status store and the front door; ``handle`` passes each message
to :class:`QueueWorker`; ``on_shutdown`` closes them.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable

from aiohttp import web

from runtime import Context, Event, Outcome

from . import tracing
from .callbacks.guard import guarded_resolver
from .callbacks.results import ResultStore
from .front_door import LOOKUP_TIMEOUT_S, FrontDoor, Functions
from .invoke import Invoker
from .metrics import FunctionLabels, WorkerMetrics
from .settings import WorkerSettings
from .status.cancellations import Cancellations
from .status.store import CallStatus
from .transport.http import HTTPTransport
from .version import USER_AGENT, VERSION
from .worker import QueueWorker

#: Owner of the durable consumer: another function given this queue's ``nats_durable`` is refused.
NAME = "queue-worker"
#: The OpenFaaS queue-worker's topology, as the OpenFaaS charts name it (stack.yml states it too);
#: the template itself names none, so no other function joins this queue by accident.
ENV_DEFAULTS = {"queue_name": "faas-request", "nats_durable": "faas-workers", "dead_letter_stream": "faas-dead-letter"}
#: The OpenFaaS queue-worker's metric names (``queue_worker_pending_messages``, ...), which
#: dashboards and autoscaling rules rely on, whatever ``metrics_namespace`` says.
METRICS_NAMESPACE = "queue_worker"
#: Idle connections kept for asking the gateway about functions: one short GET per function every few seconds.
CHECK_CONNECTIONS = 8


async def on_startup(context: Context) -> None:
    """Validate the settings (a bad one stops start-up) and open the HTTP clients."""
    settings = WorkerSettings.from_env(context.environ)
    # Retries are redeliveries: a pre-made consumer must allow as many as the worker makes.
    context.needs.min_deliver, context.needs.because = max(
        (settings.retry.attempts, "max_retry_attempts"), (settings.callback_retry.attempts, "callback_retry_attempts")
    )
    pool = context.settings.max_inflight
    gateway = HTTPTransport(timeout_s=settings.upstream_timeout_s, user_agent=USER_AGENT, max_idle=pool)
    callbacks = HTTPTransport(
        timeout_s=settings.callback_timeout_s,
        user_agent=USER_AGENT,
        max_idle=pool,
        resolve=guarded_resolver(settings.callback_allowlist),
        verify=not settings.tls_insecure,
    )
    if settings.tls_insecure:
        context.log.warning("TLS verification of callback receivers is off (tls_insecure=true)")
    replicas = context.settings.stream_replicas
    metrics = WorkerMetrics.create(context.registry, VERSION, context.settings.queue_name)
    status = CallStatus(
        settings.call_status_bucket,
        settings.call_status_ttl_s,
        replicas=replicas,
        max_calls=settings.call_status_max_calls,
        log=context.log,
        on_failure=lambda reason: metrics.status_failures.labels(metrics.queue, reason).inc(),
    )
    cancellations = Cancellations(
        f"{settings.call_status_bucket}-cancelled",
        settings.call_status_ttl_s,
        replicas,
        max_calls=settings.call_status_max_calls,
        log=context.log,
    )
    functions = None
    # Function mode reads a function's cap on calls at once from its annotations too.
    if settings.check_function_exists or settings.retry_annotations or context.settings.function_mode:
        functions = Functions(
            transport=HTTPTransport(
                timeout_s=min(settings.upstream_timeout_s, LOOKUP_TIMEOUT_S),
                user_agent=USER_AGENT,
                max_idle=CHECK_CONNECTIONS,
            ),
            gateway_url=settings.gateway_url,
            credentials=settings.gateway_credentials,
            ttl_s=settings.function_cache_ttl_s,
        )
    worker = QueueWorker(
        settings=settings,
        invoker=Invoker(transport=gateway, gateway_url=settings.gateway_url),
        callbacks=callbacks,
        metrics=metrics,
        rng=random.Random(),
        status=status,
        cancellations=cancellations,
        results=ResultStore(settings.callback_results_bucket, replicas),
        labels=FunctionLabels(settings.max_function_series, settings.function_namespace),
    )
    context.state["front_door"] = FrontDoor(
        settings=settings,
        context=context,
        status=status,
        cancellations=cancellations,
        functions=functions,
        withdraw=worker.withdraw,
    )
    context.state["status"], context.state["cancellations"] = status, cancellations
    context.state["worker"] = worker
    # Last, so nothing is left running if an earlier setting stops start-up.
    spans = metrics.trace_spans
    context.state["tracing"] = tracing.configure(
        context.environ, context.log, lambda outcome, n: spans.labels(metrics.queue, outcome).inc(n)
    )
    context.log.info(
        "Queue-worker configured",
        gateway=settings.gateway_url,
        upstreamTimeout=settings.upstream_timeout_s,
        retryCodes=sorted(settings.retry.codes),
        maxRetryAttempts=settings.retry.attempts,
        tracing=tracing.enabled(),
    )


async def on_connect(context: Context) -> None:
    """Create the call-status buckets and follow cancellations."""
    status: CallStatus = context.state["status"]
    cancellations: Cancellations = context.state["cancellations"]
    await status.connect(context.nats())
    await cancellations.connect(context.nats())


def http_routes(context: Context) -> list[web.AbstractRouteDef]:
    """The async front door, served on ``port`` beside the probes."""
    front_door: FrontDoor = context.state["front_door"]
    return front_door.routes()


def handle(event: Event, context: Context) -> Awaitable[Outcome]:
    """Invoke the queued request and settle the message.

    The worker's coroutine is handed back, not awaited in one of this function's own: each
    coroutine between a message's task and the socket is a frame that every call in flight
    keeps, and that every wake-up passes through.
    """
    worker: QueueWorker = context.state["worker"]
    return worker.handle(event, context)


async def on_shutdown(context: Context) -> None:
    """Close the worker and the front door."""
    worker: QueueWorker | None = context.state.get("worker")
    if worker is not None:
        await worker.close()
        cancellations: Cancellations = context.state["cancellations"]
        await cancellations.close()
    front_door: FrontDoor | None = context.state.get("front_door")
    if front_door is not None:
        front_door.close()
    shutdown_tracing = context.state.get("tracing")
    if shutdown_tracing is not None:
        await shutdown_tracing()  # exports what is left
