"""HTTP endpoints: ``/_/health`` and ``/_/ready`` on ``port``; ``/metrics`` on ``metrics_port``.

Health answers 200 while the process serves; readiness answers 200 only while the client is
connected to NATS with the consumer bound, so Kubernetes routes nothing to a worker that
cannot consume and the OpenFaaS probes (``GET /_/health``) see a live process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .connection import ConnectionState


class WithoutRequestText(logging.Filter):
    """Keeps request bytes out of the server's error log.

    aiohttp's report of a malformed request quotes the offending line, which can be an
    ``Authorization`` header: this logs the status and the error's type, never its text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "Bad HTTP request from %s: %s %s", (remote, error.code, type(error).__name__)
            record.exc_info, record.exc_text = None, None
        return True


#: The logger aiohttp's servers report errors to here.
SERVER_LOG = logging.getLogger("runtime.http")
SERVER_LOG.addFilter(WithoutRequestText())


@dataclass(slots=True)
class Probes:
    """The running probe and metrics servers."""

    runners: tuple[web.AppRunner, ...]

    async def close(self) -> None:
        """Stop both servers."""
        for runner in self.runners:
            await runner.cleanup()


def probe_app(
    state: ConnectionState, is_stopping: Callable[[], bool], routes: Iterable[web.AbstractRouteDef] = ()
) -> web.Application:
    """Build the application served on ``port``: the probes, and the function's own ``routes``."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def ready(_: web.Request) -> web.Response:
        if state.connected and state.bound and state.consuming and not is_stopping():
            return web.Response(text="OK")
        reason = (
            "stopping"
            if is_stopping()
            else "not connected"
            if not state.connected
            else "consumer not bound"
            if not state.bound
            else "pull requests not answered"
        )
        return web.Response(status=503, text=reason)

    # Large enough for any payload NATS is configured to take; routes enforce their own limits.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/_/health", health)
    app.router.add_get("/_/ready", ready)
    app.router.add_routes(routes)
    return app


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """Build the application served on ``metrics_port``."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start(host: str, apps: tuple[tuple[web.Application, int], ...]) -> Probes:
    """Serve each application on its port."""
    runners: list[web.AppRunner] = []
    try:
        for app, port in apps:
            runner = web.AppRunner(app, access_log=None, logger=SERVER_LOG)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port).start()
    except BaseException:
        await Probes(tuple(runners)).close()
        raise
    return Probes(tuple(runners))
