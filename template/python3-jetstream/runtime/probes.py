"""HTTP endpoints: ``/_/health`` and ``/_/ready`` on ``port``; ``/metrics`` on ``metrics_port``.

Health answers 200 while the process serves; readiness answers 200 only while the client is
connected to NATS with the consumer bound and answering, so Kubernetes routes nothing to a worker
that cannot consume and the OpenFaaS probes (``GET /_/health``) see a live process. The
watchdog's readiness lock (``$TMPDIR/.lock``) exists exactly while ``/_/ready`` answers 200, for
faas-netes' exec probe when HTTP probes are off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry

from . import exposition
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


#: How often the readiness lock follows readiness.
LOCK_INTERVAL_S = 0.5
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
        reason = not_ready(state, is_stopping())
        return web.Response(text="OK") if reason is None else web.Response(status=503, text=reason)

    # Large enough for any payload NATS is configured to take; routes enforce their own limits.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/_/health", health)
    app.router.add_get("/_/ready", ready)
    app.router.add_routes(routes)
    return app


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """Build the application served on ``metrics_port``: OpenMetrics when asked (``Accept``),
    as prometheus_client's own handler answers, written by :mod:`.exposition`; compressed when
    allowed."""

    async def scrape(request: web.Request) -> web.Response:
        names = request.query.getall("name[]", None)
        body, content_type = exposition.render(registry, ",".join(request.headers.getall(hdrs.ACCEPT, [])), names)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


def not_ready(state: ConnectionState, stopping: bool) -> str | None:
    """Why the worker is not ready, or ``None`` while it consumes."""
    if stopping:
        return "stopping"
    if not state.connected:
        return "not connected"
    if not state.bound:
        return "consumer not bound"
    if not state.consuming:
        return "pull requests not answered"
    return None


def lock_path(environ: Mapping[str, str]) -> Path:
    """Where the OpenFaaS watchdog keeps its readiness lock: Go's ``os.TempDir()``, that is
    ``$TMPDIR``, else ``/tmp``, then ``.lock``."""
    return Path(environ.get("TMPDIR") or "/tmp") / ".lock"


async def keep_lock(path: Path, state: ConnectionState, is_stopping: Callable[[], bool]) -> None:
    """Keep ``path`` existing exactly while the worker is ready, as faas-netes' exec probe
    (``cat /tmp/.lock``) expects of a watchdog; removed when this is cancelled."""
    try:
        while True:
            _hold(path, not_ready(state, is_stopping()) is None)
            await asyncio.sleep(LOCK_INTERVAL_S)
    finally:
        _hold(path, False)


def _hold(path: Path, ready: bool) -> None:
    # Two system calls at most, every LOCK_INTERVAL_S: not worth a thread.
    if ready:
        path.touch()
    else:
        path.unlink(missing_ok=True)


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
