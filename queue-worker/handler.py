"""The queue-worker as a python3-jetstream function: wiring only.

``on_startup`` reads the settings and builds one long-lived HTTP client for invocations and
one for callbacks; ``handle`` passes each message to :class:`QueueWorker`.
"""

from __future__ import annotations

import random

from aiohttp import web

from runtime import Context, Event, Outcome

from .call_status import CallStatus
from .callback import CallbackClient
from .front_door import FrontDoor, FunctionCheck
from .invoke import Invoker
from .metrics import WorkerMetrics
from .origin_client import OriginClient
from .settings import WorkerSettings
from .worker import USER_AGENT, VERSION, QueueWorker

#: Idle connections kept for the function-existence check: one short GET per function every few seconds.
CHECK_CONNECTIONS = 8


async def on_startup(context: Context) -> None:
    """Validate the settings (a bad one stops start-up) and open the HTTP clients."""
    settings = WorkerSettings.from_env(context.environ)
    pool = context.settings.max_inflight
    invoker = Invoker(
        client=OriginClient(
            settings.gateway_url, timeout_s=settings.upstream_timeout_s, user_agent=USER_AGENT, max_idle=pool
        ),
        timeout_s=settings.upstream_timeout_s,
    )
    callbacks = CallbackClient(
        allowlist=settings.callback_allowlist,
        timeout_s=settings.callback_timeout_s,
        user_agent=USER_AGENT,
        max_idle=pool,
        verify=not settings.tls_insecure,
    )
    if settings.tls_insecure:
        context.log.warning("TLS verification of callback receivers is off (tls_insecure=true)")
    status = CallStatus(
        settings.call_status_bucket, settings.call_status_ttl_s, replicas=context.settings.stream_replicas
    )
    check = None
    if settings.check_function_exists:
        check = FunctionCheck(
            client=OriginClient(
                settings.gateway_url,
                timeout_s=settings.upstream_timeout_s,
                user_agent=USER_AGENT,
                max_idle=CHECK_CONNECTIONS,
            ),
            credentials=settings.gateway_credentials,
            ttl_s=settings.function_cache_ttl_s,
        )
    context.state["front_door"] = FrontDoor(settings=settings, context=context, status=status, check=check)
    context.state["worker"] = QueueWorker(
        settings=settings,
        invoker=invoker,
        callbacks=callbacks,
        metrics=WorkerMetrics.create(context.registry, VERSION),
        rng=random.Random(),
        status=status,
    )
    context.log.info(
        "Queue-worker ready",
        gateway=settings.gateway_url,
        upstreamTimeout=settings.upstream_timeout_s,
        retryCodes=sorted(settings.retry.codes),
        maxRetryAttempts=settings.retry.attempts,
    )


async def on_connect(context: Context) -> None:
    """Create the call-status buckets and follow cancellations."""
    worker: QueueWorker = context.state["worker"]
    await worker.status.connect(context.nats())


def http_routes(context: Context) -> list[web.AbstractRouteDef]:
    """The async front door, served on ``port`` beside the probes."""
    front_door: FrontDoor = context.state["front_door"]
    return front_door.routes()


async def handle(event: Event, context: Context) -> Outcome:
    """Invoke the queued request and settle the message."""
    worker: QueueWorker = context.state["worker"]
    return await worker.handle(event, context)


async def on_shutdown(context: Context) -> None:
    """Close the HTTP clients."""
    worker: QueueWorker | None = context.state.get("worker")
    if worker is not None:
        await worker.status.close()
        worker.invoker.close()
        worker.callbacks.close()
    front_door: FrontDoor | None = context.state.get("front_door")
    if front_door is not None:
        front_door.close()
