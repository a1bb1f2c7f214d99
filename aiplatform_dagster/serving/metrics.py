"""Prometheus metrics of the API: ``GET /metrics``.

Each app has its own registry (several apps in one process, as in the tests, never share
counts). Request latency per endpoint, query latency per stage, tokens, cost, cache lookups and
errors are counted as they happen; the live release, month-to-date spend against the monthly
budget, and the latest drift report are read when Prometheus scrapes. The alert rules over these
names are in ``k8s/monitoring/``.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from aiplatform_dagster.rag.query.engine import (
    CACHE_SKIPPED_NOTE,
    Answer,
    AnswerKind,
)
from aiplatform_dagster.serving.audit import AuditLog
from aiplatform_dagster.serving.spend import SpendLedger

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServingMetrics:
    """The API's metrics; ``observe_*`` never raise into a request."""

    def __init__(
        self,
        spend: SpendLedger,
        monthly_budget_usd: float,
        live: Callable[[], dict[str, str]],
        drift_reports: Path,
        audit: AuditLog,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.spend = spend
        self.requests = Counter(
            "aiplatform_http_requests", "Requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "aiplatform_http_request_duration_seconds", "Request latency by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.stages = Histogram(
            "aiplatform_query_stage_duration_seconds",
            "Latency of each stage of a query (route, retrieve, rerank, cache, generate, ...).",
            ["stage"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "aiplatform_llm_tokens", "LLM tokens, by source (query, agent) and direction.",
            ["source", "direction"], registry=self.registry,
        )  # fmt: skip
        self.cost = Counter(
            "aiplatform_llm_cost_usd", "LLM cost in US dollars, by source (query, agent).",
            ["source"], registry=self.registry,
        )  # fmt: skip
        self.cache = Counter(
            "aiplatform_cache_lookups",
            "Response-cache lookups: hit, miss, or bypassed (the cache was unreachable).",
            ["result"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "aiplatform_errors", "Errors by kind (unauthorized, rate_limited, llm_unavailable, "
            "spend_ledger, internal, ...).", ["kind"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ScrapeTime(spend, monthly_budget_usd, live, drift_reports, audit))

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        kind = ERROR_KINDS.get(status) or ("internal" if status >= 500 else None)
        if kind is None and 400 <= status < 500:
            kind = "bad_request"
        if kind:
            self.errors.labels(kind).inc()

    def observe_answer(self, answer: Answer) -> None:
        for stage, ms in answer.timings_ms.items():
            self.stages.labels(stage).observe(ms / 1000)
        self._spent("query", answer.usage.prompt_tokens, answer.usage.completion_tokens,
                    answer.usage.cost_usd)  # fmt: skip
        if any(note.startswith(CACHE_SKIPPED_NOTE) for note in answer.notes):
            self.cache.labels("bypassed").inc()
        elif answer.kind is AnswerKind.CACHED:
            self.cache.labels("hit").inc()
        elif answer.kind is AnswerKind.GENERATED and "cache" in answer.timings_ms:
            self.cache.labels("miss").inc()
        if answer.llm_failed:
            self.errors.labels("llm_unavailable").inc()

    def observe_agent(self, spend: dict[str, float]) -> None:
        prompt = int(spend.get("prompt_tokens", 0))
        completion = int(spend.get("completion_tokens", 0))
        self._spent("agent", prompt, completion, float(spend.get("cost_usd", 0.0)))

    def _spent(self, source: str, prompt: int, completion: int, usd: float) -> None:
        self.tokens.labels(source, "prompt").inc(prompt)
        self.tokens.labels(source, "completion").inc(completion)
        if usd > 0:
            self.cost.labels(source).inc(usd)
            if not self.spend.add(usd):
                self.errors.labels("spend_ledger").inc()


ERROR_KINDS = {401: "unauthorized", 403: "forbidden", 413: "too_large", 422: "invalid",
               429: "rate_limited", 503: "unavailable"}  # fmt: skip


class _ScrapeTime(Collector):
    """What is read when Prometheus scrapes rather than counted as it happens."""

    def __init__(
        self,
        spend: SpendLedger,
        budget_usd: float,
        live: Callable[[], dict[str, str]],
        drift_reports: Path,
        audit: AuditLog,
    ) -> None:
        self.spend, self.budget_usd, self.live, self.drift_reports, self.audit = (
            spend, budget_usd, live, drift_reports, audit,
        )  # fmt: skip

    def collect(self) -> Iterator[Any]:
        info = InfoMetricFamily("aiplatform_release", "The serving release being served.")
        info.add_metric([], self.live())
        yield info
        spent = self.spend.month_to_date()
        if spent is not None:
            yield GaugeMetricFamily(
                "aiplatform_spend_month_to_date_usd",
                "LLM spend this calendar month (UTC), all replicas that share the ledger.",
                value=spent,
            )
        yield GaugeMetricFamily(
            "aiplatform_monthly_budget_usd",
            "The monthly LLM budget (AIPLATFORM_SERVING_MONTHLY_BUDGET_USD; 0: none).",
            value=self.budget_usd,
        )
        yield GaugeMetricFamily(
            "aiplatform_audit_buffered",
            "Audit entries waiting to be written (the audit store is unreachable when > 0).",
            value=self.audit.buffered,
        )
        yield CounterMetricFamily(
            "aiplatform_audit_dropped",
            "Audit entries lost because the buffer overflowed while the store was down.",
            value=self.audit.dropped,
        )
        yield from _drift(self.drift_reports)


def _drift(folder: Path) -> Iterator[GaugeMetricFamily]:
    """The newest drift report (query_drift_report): PSI per feature, and whether it drifted."""
    reports = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not reports:
        return
    try:
        report = json.loads(reports[-1].read_text("utf-8"))
    except (OSError, ValueError):
        return
    psi = GaugeMetricFamily(
        "aiplatform_drift_psi", "PSI of each query feature in the newest drift report.",
        labels=["feature"],
    )  # fmt: skip
    for feature in report.get("features", []):
        if feature.get("psi") is not None:
            psi.add_metric([feature["feature"]], float(feature["psi"]))
    yield psi
    yield GaugeMetricFamily(
        "aiplatform_drift_detected",
        "1 when the newest drift report found drift in a query feature, else 0.",
        value=1.0 if report.get("drifted") else 0.0,
    )
