"""OpenTelemetry as an operator meets it: `aiplatform serve` with OTEL_EXPORTER_OTLP_ENDPOINT
pointed at a collector (here a local HTTP receiver that decodes the real OTLP protobuf the real
exporter sends: no collector can run here) exports one trace per request: the request span
with its request id, and the query's stages nested in it."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aiplatform_dagster_tests.serving.served import aiplatform_serve


class Receiver:
    """Collects the spans posted to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    collector = Receiver()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    yield collector
    collector.server.shutdown()


def attributes(span) -> dict:
    return {kv.key: kv.value.string_value or kv.value.int_value for kv in span.attributes}


def test_a_query_is_one_trace_with_its_request_id_and_stages(
    storage: Path, tmp_path: Path, receiver: Receiver
) -> None:
    with aiplatform_serve(storage, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url) as api:
        response = httpx.post(
            f"{api.base}/v1/query",
            json={"question": "How long are vector index backups kept?"},
            headers={"Authorization": f"Bearer {api.key}", "X-Request-ID": "trace-me-1"},
            timeout=60,
        )
        assert response.status_code == 200
    # the shutdown flushed the batch of spans

    by_name = {span.name: span for span in receiver.spans}
    requests = {attributes(s).get("request.id"): s for s in receiver.spans}
    request = requests["trace-me-1"]
    assert request.name == "POST /v1/query"
    assert attributes(request)["http.status_code"] == 200
    query = by_name["rag.query"]
    assert query.trace_id == request.trace_id
    assert attributes(query)["rag.answer_kind"] == "extractive"
    for stage in ("rag.route", "rag.retrieve", "rag.generate"):
        assert by_name[stage].trace_id == request.trace_id, stage
        assert by_name[stage].parent_span_id == query.span_id, stage
