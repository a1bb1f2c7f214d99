"""Agent traces: every node, LLM call, tool call, governance decision and state transition as a
structured event, with token counts and cost where they apply.

Events always go to a JSON-lines file per thread (one line per event, flushed as written, so a
killed process keeps what it traced), and also become OpenTelemetry spans when a collector is
configured. LangSmith needs no sink: with its key set, ``langsmith_env`` gives the variables
under which LangGraph traces runs to it natively. ``summarise`` totals a run (or a whole thread
read back with ``read_trace``).
"""

import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from aiplatform_dagster.agents.threads import check_thread_id
from aiplatform_dagster.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

KINDS = frozenset({"node", "llm", "tool", "governance", "state"})
RESERVED = frozenset({"ts", "thread_id", "run_id", "kind", "name", "span_id", "parent_id"})
"""Fields every event carries; callers' fields may not overwrite them."""
SERVICE_NAME = "aiplatform-agents"

_current_span: ContextVar[tuple[str, str] | None] = ContextVar("agent_span", default=None)
"""(run id, span id) of the span open in this context: the parent of what starts inside it.
A context variable, so nodes LangGraph runs in worker threads nest under the right span."""


class TraceSink(Protocol):
    """Where events go. ``started`` announces a span (sinks that only write finished events
    ignore it); ``record`` receives point events and finished spans."""

    def started(self, event: dict[str, Any]) -> None: ...

    def record(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per line, appended; flushed per event."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def started(self, event: dict[str, Any]) -> None:
        """Only finished events are written."""

    def record(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class OtelSink:
    """Events as OpenTelemetry spans, nested as the tracer's spans nest, batched to an OTLP HTTP
    collector (or to ``exporter``). Its own TracerProvider: the process-wide one is left alone."""

    def __init__(self, endpoint: str | None = None, *, exporter: "SpanExporter | None" = None):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            if not endpoint:
                raise ValueError("OtelSink needs an endpoint or an exporter")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The variable names the collector's base URL; the traces path is the exporter's.
            exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        self._provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer(__name__)
        self._open: dict[str, Any] = {}

    def started(self, event: dict[str, Any]) -> None:
        self._open[event["span_id"]] = self._start(event)

    def record(self, event: dict[str, Any]) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._open.pop(event["span_id"], None) or self._start(event)
        for key, value in event.items():
            if key not in {"ts", "name"} and value is not None:
                span.set_attribute(f"agent.{key}", _attribute(value))
        if event.get("status") == "error":
            span.set_status(Status(StatusCode.ERROR, event.get("error")))
        end = _nanoseconds(event["ts"]) + int(float(event.get("duration_ms", 0.0)) * 1e6)
        span.end(end_time=end)

    def close(self) -> None:
        self._provider.shutdown()  # flushes the batch

    def _start(self, event: dict[str, Any]) -> Any:
        from opentelemetry import trace

        parent = self._open.get(event["parent_id"] or "")
        return self._tracer.start_span(
            event["name"],
            context=trace.set_span_in_context(parent) if parent is not None else None,
            start_time=_nanoseconds(event["ts"]),
        )


class Span:
    """An open span: ``set`` adds fields (tokens, cost, a status such as "refused") that are
    recorded when it closes."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def set(self, **fields: Any) -> None:
        _check_fields(fields)
        self.fields.update(fields)


@dataclass(frozen=True)
class TraceSummary:
    steps: int
    llm_calls: int
    tool_calls: int
    refused: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tracer:
    """Traces one run of one thread into ``sinks``; keeps the run's events for ``summary``."""

    def __init__(self, thread_id: str, run_id: str, sinks: Iterable[TraceSink]) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.sinks = list(sinks)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def event(self, kind: str, name: str, **fields: Any) -> dict[str, Any]:
        """Record something that happened at one instant; returns the event."""
        _check_fields(fields)
        event = {**self._opening(kind, name), **fields}
        self._record(event)
        return event

    @contextmanager
    def span(self, kind: str, name: str, **fields: Any) -> Iterator[Span]:
        """Record the block as one event with its duration and status: "ok", "error" (with the
        error) when it raises, "interrupted" when LangGraph pauses it for a human."""
        _check_fields(fields)
        opening = self._opening(kind, name)
        with self._lock:
            for sink in self.sinks:
                sink.started({**opening, **fields})
        token = _current_span.set((self.run_id, opening["span_id"]))
        span, started = Span(dict(fields)), time.perf_counter()
        failure: dict[str, Any] = {}
        try:
            yield span
        except BaseException as error:
            failure = _failure(error)
            raise
        finally:
            _current_span.reset(token)
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            closing = {"status": "ok", **span.fields, **failure, "duration_ms": duration_ms}
            self._record({**opening, **closing})

    def summary(self) -> "TraceSummary":
        """This run's totals."""
        with self._lock:
            return summarise(self.events)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _opening(self, kind: str, name: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"trace kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
        current = _current_span.get()
        return {
            "ts": datetime.now(UTC).isoformat(),
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "kind": kind,
            "name": name,
            "span_id": uuid.uuid4().hex[:16],
            "parent_id": current[1] if current and current[0] == self.run_id else None,
        }

    def _record(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)
            for sink in self.sinks:
                sink.record(event)


def summarise(events: Iterable[dict[str, Any]]) -> TraceSummary:
    """Totals of a run's or a thread's events: counts by kind, refusals, tokens, cost, and the
    wall time from the first event's start to the last one's end."""
    events = list(events)
    starts = [datetime.fromisoformat(event["ts"]).timestamp() * 1000 for event in events]
    ends = [
        start + float(event.get("duration_ms", 0.0))
        for start, event in zip(starts, events, strict=True)
    ]
    kinds = [event["kind"] for event in events]
    return TraceSummary(
        steps=kinds.count("node"),
        llm_calls=kinds.count("llm"),
        tool_calls=kinds.count("tool"),
        refused=sum(event.get("status") == "refused" for event in events),
        prompt_tokens=sum(int(event.get("prompt_tokens") or 0) for event in events),
        completion_tokens=sum(int(event.get("completion_tokens") or 0) for event in events),
        cost_usd=round(sum(float(event.get("cost_usd") or 0.0) for event in events), 6),
        duration_ms=round(max(ends) - min(starts), 3) if events else 0.0,
    )


def trace_path(settings: Settings, thread_id: str) -> Path:
    """The JSON-lines trace of a thread: every run of it appends there."""
    folder = settings.agents.trace_dir or settings.paths.storage_dir / "agents" / "traces"
    return folder / f"{check_thread_id(thread_id)}.jsonl"


def open_tracer(settings: Settings, thread_id: str, run_id: str | None = None) -> Tracer:
    """A tracer for a run of ``thread_id``: the JSON-lines file, plus OpenTelemetry spans when
    OTEL_EXPORTER_OTLP_ENDPOINT is set. Close it (or use it as a context manager) to flush."""
    sinks: list[TraceSink] = [JsonLinesSink(trace_path(settings, thread_id))]
    if settings.agents.otlp_endpoint:
        sinks.append(OtelSink(settings.agents.otlp_endpoint))
    return Tracer(thread_id, run_id or uuid.uuid4().hex, sinks)


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The events of a trace file. A last line cut short by a killed process is skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise
    return events


def langsmith_env(settings: Settings) -> dict[str, str]:
    """Variables under which LangGraph traces runs to LangSmith: none unless its key is set."""
    key = settings.agents.langsmith_api_key
    if key is None:
        return {}
    return {"LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": key.get_secret_value()}


def _check_fields(fields: dict[str, Any]) -> None:
    clashing = RESERVED & fields.keys()
    if clashing:
        raise ValueError(f"trace fields {', '.join(sorted(clashing))} are set by the tracer")


def _failure(error: BaseException) -> dict[str, Any]:
    from langgraph.errors import GraphBubbleUp

    if isinstance(error, GraphBubbleUp):  # an interrupt or a command for the parent graph
        return {"status": "interrupted"}
    return {"status": "error", "error": f"{type(error).__name__}: {error}"}


def _nanoseconds(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1e9)


def _attribute(value: Any) -> str | bool | int | float:
    """OpenTelemetry attributes hold plain values; anything else goes as JSON."""
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
