"""Optional OpenTelemetry tracing: off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

When on, every HTTP request is a server span that continues the caller's W3C ``traceparent``
(or starts a trace), and its trace id is the ``X-Trace-ID`` the API answers and logs, so one id
finds a transfer in the traces and in the JSON logs alike. Spans are exported over OTLP/HTTP.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

import banking


def build_tracer_provider(
    *, endpoint: str, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Spans exported to ``endpoint`` (or to ``exporter``); None when tracing is off."""
    if exporter is None:
        if not endpoint:
            return None
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service_name, "service.version": banking.__version__}
        )
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
