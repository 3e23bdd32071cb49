"""The queue-worker as a python3-jetstream function: wiring only.

``on_startup`` reads the settings and builds one long-lived HTTP client for invocations and
one for callbacks; ``handle`` passes each message to :class:`QueueWorker`.
"""

from __future__ import annotations

import random

from runtime import Context, Event, Outcome

from .invoke import Invoker
from .metrics import WorkerMetrics
from .settings import WorkerSettings
from .transport import make_session
from .worker import USER_AGENT, VERSION, QueueWorker


async def on_startup(context: Context) -> None:
    """Validate the settings (a bad one stops start-up) and open the HTTP clients."""
    settings = WorkerSettings.from_env(context.environ)
    pool = context.settings.max_inflight
    invoker = Invoker(
        session=make_session(timeout_s=settings.upstream_timeout_s, max_connections=pool, user_agent=USER_AGENT),
        gateway_url=settings.gateway_url,
        timeout_s=settings.upstream_timeout_s,
    )
    callback_session = make_session(
        timeout_s=settings.callback_timeout_s,
        max_connections=pool,
        user_agent=USER_AGENT,
        verify=not settings.tls_insecure,
    )
    if settings.tls_insecure:
        context.log.warning("TLS verification of callback receivers is off (tls_insecure=true)")
    context.state["worker"] = QueueWorker(
        settings=settings,
        invoker=invoker,
        callback_session=callback_session,
        metrics=WorkerMetrics.create(context.registry, VERSION),
        rng=random.Random(),
    )
    context.log.info(
        "Queue-worker ready",
        gateway=settings.gateway_url,
        upstreamTimeout=settings.upstream_timeout_s,
        retryCodes=sorted(settings.retry.codes),
        maxRetryAttempts=settings.retry.attempts,
    )


async def handle(event: Event, context: Context) -> Outcome:
    """Invoke the queued request and settle the message."""
    worker: QueueWorker = context.state["worker"]
    return await worker.handle(event, context)


async def on_shutdown(context: Context) -> None:
    """Close the HTTP clients."""
    worker: QueueWorker | None = context.state.get("worker")
    if worker is not None:
        await worker.invoker.aclose()
        await worker.callback_session.close()
