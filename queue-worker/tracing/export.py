"""What tracing keeps of the OpenTelemetry SDK: its configuration by ``OTEL_*`` variables (the
sampler, the resource) and its OTLP/HTTP client (endpoint, headers, TLS, compression, timeout
and retries from ``OTEL_EXPORTER_OTLP_*``). Imported only when tracing is on, from the image's
tracing extras.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler
from structlog.typing import FilteringBoundLogger

from .batches import Batches, BatchSettings
from .otlp import Encoder


@dataclass(frozen=True)
class Configured:
    sampler: Sampler
    batches: Batches
    exporter: OTLPSpanExporter

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], version: str, log: FilteringBoundLogger) -> Configured:
        """Raises:
        ConfigError: an ``OTEL_BSP_*`` setting is invalid.
        """
        settings = BatchSettings.from_environment(environ)
        service = environ.get("OTEL_SERVICE_NAME") or "queue-worker"
        resource = Resource.create({SERVICE_NAME: service})  # and OTEL_RESOURCE_ATTRIBUTES
        # A provider is the SDK's one reader of OTEL_TRACES_SAMPLER; it makes no spans here.
        sampler = TracerProvider(resource=resource).sampler
        exporter = OTLPSpanExporter()

        def send(data: bytes) -> bool:
            # _client is the exporter's own HTTP client (a pinned version; the tracing tests
            # export through it): the part of export() that follows the SDK's encoder.
            return bool(exporter._client.export(data).success)

        encoder = Encoder(dict(resource.attributes), "queue-worker", version)
        return cls(sampler, Batches(encoder, send, settings, log), exporter)

    async def close(self) -> None:
        """Export what is left, then close the client."""
        await self.batches.close()
        self.exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
