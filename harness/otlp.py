"""An OTLP/HTTP trace receiver on loopback: takes what an OpenTelemetry exporter posts to
``/v1/traces`` (protobuf) and keeps every span, flattened, for tests to read."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from harness.ports import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported: ids in hex, as ``traceparent`` writes them."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    service: str
    error: bool
    start_ns: int = 0
    end_ns: int = 0
    #: (trace id, span id) of each span it links to.
    links: tuple[tuple[str, str], ...] = ()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


_ACCEPTED = ExportTraceServiceResponse().SerializeToString()


@dataclass
class OtlpReceiver:
    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    #: Keep each span (tests); else only count them, as cheaply as a collector elsewhere would
    #: cost the machine (the bench).
    keep: bool = True
    counted: int = 0
    #: Served over TLS with this context (which may require a client certificate).
    tls: ssl.SSLContext | None = None
    #: Each ``Content-Encoding`` an export came with.
    encodings: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        # As the Collector's receiver: protobuf only when it says so (JSON is not sent here).
        if request.content_type != "application/x-protobuf":
            raise web.HTTPUnsupportedMediaType(text=f"unsupported content type {request.content_type!r}")
        self.encodings.add(request.headers.get("Content-Encoding", "identity"))
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())  # decompressed by aiohttp
        if not self.keep:
            self.counted += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
            return web.Response(body=_ACCEPTED, content_type="application/x-protobuf")
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service=str(resource.get("service.name", "")),
                            error=span.status.code == 2,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        )
                    )
        return web.Response(body=_ACCEPTED, content_type="application/x-protobuf")
