"""What tracing keeps of the OpenTelemetry SDK: its configuration by ``OTEL_*`` variables (the
sampler, the resource) and its OTLP/HTTP client (endpoint, headers, compression, timeout and
retries from ``OTEL_EXPORTER_OTLP_*``). Imported only when tracing is on, from the image's
tracing extras.

The client's requests are made on the event loop, by the worker's own HTTP transport
(:class:`LoopTransport`). The client runs in a thread, as it blocks while it retries; with
``requests`` under it, that thread ran Python for each request and contended for the GIL with
the loop: at 10% sampling, 100 in flight, exporting cost the worker 3.5% of its throughput
(side by side with tracing off: 0.863 against 0.898 with the same spans encoded and not sent,
five rounds each). Now the thread only waits for the loop's answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from structlog.typing import FilteringBoundLogger

from runtime import ConfigError, describe

from ..transport import ConnectFailed, ConnectionBroken, Response, TransportTimeout
from ..transport.http import HTTPTransport
from . import RatioAnswers
from .batches import Batches, BatchSettings
from .otlp import Encoder

#: Set, they name a plugin that gives the SDK's client a ``requests`` session of its own (for
#: credentials it refreshes): then the SDK's own transport is kept.
_CREDENTIAL_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


@dataclass(frozen=True, slots=True)
class _Result(BaseHTTPResult):
    response: Response | None = field(default=None, hash=False, compare=False)

    def content(self) -> bytes:
        return self.response.body if self.response is not None else b""

    def headers(self) -> Mapping[str, str]:
        """Any case finds a name (the client asks for ``retry-after``); repeated fields are joined
        with commas, as the interface asks."""
        joined: dict[str, list[str]] = {}
        for name, value in self.response.headers if self.response is not None else ():
            joined.setdefault(name.lower(), []).append(value)
        return CIMultiDictProxy(CIMultiDict((name, ", ".join(values)) for name, values in joined.items()))


class LoopTransport(BaseHTTPTransport):
    """The SDK client's requests, sent on ``loop`` by an :class:`HTTPTransport`; called from
    the client's thread, never from the loop's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: HTTPTransport) -> None:
        self._loop = loop
        self._transport = transport
        #: What the last request that failed met, for an export given up without saying why.
        self.last_failure = ""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        try:
            response = asyncio.run_coroutine_threadsafe(
                self._send(method, url, list((headers or {}).items()), data or b"", within_s=timeout), self._loop
            ).result()
        except Exception as exc:  # the client decides, from the error, whether to try again
            self.last_failure = describe(exc)
            return _Result(error=exc)
        reason = describe_status(response)
        if not 200 <= response.status < 300:
            self.last_failure = status_text(response.status, reason)
        return _Result(status_code=response.status, reason=reason, response=response)

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, *, within_s: float | None
    ) -> Response:
        try:
            async with asyncio.timeout(within_s):
                return await self._transport.request(method, url, headers, body)
        except TransportTimeout:
            raise
        except TimeoutError:  # only the client's own timeout raises it bare
            raise TransportTimeout(f"no answer within {within_s:.1f}s") from None

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, ConnectFailed | ConnectionBroken | TransportTimeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._transport.close)


def not_taken(result: Any, last_failure: str = "") -> str:
    """Why the client's export was not taken, from its result, or ``""`` when it was; a result
    with no reason (retries given up at shutdown) gives ``last_failure``'s. Pure."""
    if result.success:
        return ""
    if result.status_code is not None:
        return status_text(result.status_code, result.reason or "")
    if result.error is not None:
        return describe(result.error)
    return f"retries given up at shutdown{f' after {last_failure}' if last_failure else ''}"


def status_text(code: int, reason: str) -> str:
    """``status <code> <reason>``, with the code once whether or not the reason starts with it
    (this transport's reasons do; the SDK's own transport's are the bare phrase). Pure."""
    return f"status {reason if reason.startswith(str(code)) else f'{code} {reason}'.rstrip()}"


def describe_status(response: Response) -> str:
    """The reason the SDK logs with a refused export: the status and the start of the body."""
    return f"{response.status} {response.body[:200].decode('utf-8', 'replace')}".strip()


def tls_context(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    """The TLS settings of ``OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE``, ``CLIENT_CERTIFICATE``
    and ``CLIENT_KEY``, as the SDK reads them (the signal's own first); ``None`` when none is
    set, so the transport makes its default context, and only for an https endpoint.

    Raises:
        ConfigError: a file named is missing or not a certificate (or key).
    """

    def setting(name: str) -> tuple[str, str]:
        for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
            if environ.get(variable):
                return variable, environ[variable]
        return "", ""

    ca_variable, ca = setting("CERTIFICATE")
    cert_variable, cert = setting("CLIENT_CERTIFICATE")
    _, key = setting("CLIENT_KEY")
    if not ca and not cert:
        return None
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(ca_variable, ca, describe(exc)) from None
    if cert:
        try:
            context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(cert_variable, cert, describe(exc)) from None
    return context


def ratio_answers(sampler: Sampler) -> RatioAnswers:
    """What a sampler answers without being asked: a ``traceidratio``'s bound (it keeps the
    trace ids whose low 64 bits are below it) whatever the parent, a ``parentbased_traceidratio``'s
    for an attempt with no parent, and the answer for a root span either keeps (sample, with no
    attributes and no trace state); and whether a parent-based sampler drops what a remote
    parent did not sample. Nothing else: any other answer is asked for."""
    kept = SamplingResult(Decision.RECORD_AND_SAMPLE)
    if type(sampler) is TraceIdRatioBased:
        return RatioAnswers(sampler.bound, sampler.bound, kept)
    if not isinstance(sampler, ParentBased):
        return RatioAnswers()
    # The samplers a ParentBased asks with no parent (_root) and with a remote parent that did
    # not sample (ALWAYS_OFF unless made in code): a pinned SDK, and a unit test notices if
    # they move.
    root = getattr(sampler, "_root", None)
    drops = getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
    if type(root) is TraceIdRatioBased:
        return RatioAnswers(None, root.bound, kept, drops)
    return RatioAnswers(drops_unsampled_parents=drops)


@dataclass(frozen=True)
class Configured:
    sampler: Sampler
    batches: Batches
    exporter: OTLPSpanExporter
    #: :func:`ratio_answers`.
    answers: RatioAnswers

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        version: str,
        log: FilteringBoundLogger,
        count: Callable[[str, int], None] | None = None,
    ) -> Configured:
        """Called on the event loop; ``count`` is told what became of the spans (:class:`Batches`).

        Raises:
            ConfigError: an ``OTEL_BSP_*`` setting is invalid, or a TLS file cannot be loaded.
        """
        settings = BatchSettings.from_environment(environ)
        service = environ.get("OTEL_SERVICE_NAME") or "queue-worker"
        resource = Resource.create({SERVICE_NAME: service})  # and OTEL_RESOURCE_ATTRIBUTES
        # A provider is the SDK's one reader of OTEL_TRACES_SAMPLER; it makes no spans here.
        sampler = TracerProvider(resource=resource).sampler
        options: dict[str, Any] = {}
        loop_transport: LoopTransport | None = None
        if not any(environ.get(variable) for variable in _CREDENTIAL_PROVIDERS):
            # The client's own timeout bounds each request; this one only stops a stuck one.
            transport = HTTPTransport(
                timeout_s=3600, user_agent=f"queue-worker/{version}", max_idle=2, tls=tls_context(environ)
            )
            loop_transport = options["_transport"] = LoopTransport(asyncio.get_running_loop(), transport)
        exporter = OTLPSpanExporter(**options)

        # _client is the exporter's own HTTP client (a pinned version; the tracing tests export
        # through it): the part of export() that follows the SDK's encoder.
        client = exporter._client

        def send(data: bytes) -> str:
            return not_taken(client.export(data), loop_transport.last_failure if loop_transport is not None else "")

        def stop_retries() -> None:
            # What the client's own shutdown sets, without closing it: a failed request is not
            # tried again (nor waited on with back-off) while the last spans go out.
            client._shutdown_event.set()

        encoder = Encoder(dict(resource.attributes), "queue-worker", version)
        batches = Batches(encoder, send, settings, log, stop_retries, count)
        return cls(sampler, batches, exporter, ratio_answers(sampler))

    async def close(self) -> None:
        """Export what is left, then close the client."""
        await self.batches.close()
        self.exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
