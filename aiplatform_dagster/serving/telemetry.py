"""OpenTelemetry for the API: a span per request, the query's stages nested in it.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the process's tracer provider exports over OTLP/HTTP
in batches (to an OpenTelemetry Collector, which forwards to Jaeger, Tempo, or Azure Monitor /
Application Insights through its ``azuremonitor`` exporter). Each request span carries the
request id that every log line and response carries, so a trace and its logs are found by the
same id. Without the variable nothing is recorded and the spans cost nothing.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

SERVICE_NAME = "aiplatform-api"
API_TRACER = trace.get_tracer("aiplatform.serving")


def configure_tracing(endpoint: str | None) -> Any:
    """Install an OTLP-exporting tracer provider for this process (the API does when it starts;
    one per process: OpenTelemetry keeps the first); returns it (shut it down to flush), or
    None when no endpoint is configured."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


@contextmanager
def request_span(method: str, path: str, request_id: str) -> Iterator[Any]:
    """The server span of one request; name it by its route once routing has happened."""
    with API_TRACER.start_as_current_span(
        f"{method} {path}", kind=trace.SpanKind.SERVER, attributes={"request.id": request_id}
    ) as span:
        yield span
