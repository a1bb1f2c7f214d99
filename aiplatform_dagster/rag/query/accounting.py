"""Cost and latency accounting for the query path.

Every answer reports what it cost and where its time went, so a slow or expensive query can
be explained from its own response. Prices are list prices per million tokens; deployments
with negotiated or self-hosted prices override them with a JSON file. A model without a
price costs 0.0 and is flagged unpriced, because a guessed number would be worse than none.
"""

import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace

PRICE_TABLE_ENV = "AIPLATFORM_PRICE_TABLE"
_TOKENS_PER_PRICE_UNIT = 1_000_000
_SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per one million tokens."""

    input: float
    output: float

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0:
            raise ValueError(f"prices must be >= 0, got input={self.input} output={self.output}")


# OpenAI list prices (USD per 1M tokens) when this table was written; override with
# AIPLATFORM_PRICE_TABLE when they change.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "text-embedding-3-small": ModelPrice(0.02, 0.0),
    "text-embedding-3-large": ModelPrice(0.13, 0.0),
}


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one answer; a cached answer made no LLM call and cost nothing."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    priced: bool = True
    """False when the model has no price in the table, so cost_usd is not a real cost."""


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def from_json(cls, path: Path | str) -> "PriceTable":
        """Defaults overridden/extended by a file of {"model": {"input": x, "output": y}}."""
        path = Path(path)
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            overrides = {
                model: ModelPrice(float(price["input"]), float(price["output"]))
                for model, price in entries.items()
            }
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"Price table {path} is invalid ({exc!r}): it must be a JSON object of "
                '{"model-name": {"input": <USD per 1M tokens>, "output": <USD per 1M tokens>}}'
            ) from exc
        return cls({**DEFAULT_PRICES, **overrides})

    def price(self, model: str) -> ModelPrice | None:
        """The model's price; dated snapshots ("gpt-4o-2024-08-06") fall back to their family."""
        return self.prices.get(model) or self.prices.get(_SNAPSHOT_DATE.sub("", model))

    def priced(self, model: str) -> bool:
        return self.price(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call; 0.0 for a model without a price (see ``priced``)."""
        price = self.price(model)
        if price is None:
            return 0.0
        return (
            prompt_tokens * price.input + completion_tokens * price.output
        ) / _TOKENS_PER_PRICE_UNIT

    def usage(
        self, model: str, prompt_tokens: int, completion_tokens: int, cached: bool = False
    ) -> Usage:
        """The Usage to report for an answer; a cache hit was not billed."""
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=0.0 if cached else self.cost(model, prompt_tokens, completion_tokens),
            cached=cached,
            priced=self.priced(model),
        )


QUERY_TRACER = trace.get_tracer("aiplatform.rag")
"""Spans of the query path; a no-op until the application sets a tracer provider."""


class StageTimer:
    """Wall time per named stage of one request; a stage entered twice accumulates."""

    def __init__(self) -> None:
        self._timings_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block, also when it raises: a failed stage still took that long. The stage
        is also an OpenTelemetry span (``rag.NAME``), recorded when the application configured
        a tracer provider (the API does when OTEL_EXPORTER_OTLP_ENDPOINT is set), else free."""
        start = time.perf_counter()
        with QUERY_TRACER.start_as_current_span(f"rag.{name}"):
            try:
                yield
            finally:
                elapsed_ms = (time.perf_counter() - start) * 1000.0
                self._timings_ms[name] = self._timings_ms.get(name, 0.0) + elapsed_ms

    @property
    def timings_ms(self) -> dict[str, float]:
        """Milliseconds per stage, in the order stages first ran."""
        return dict(self._timings_ms)

    @property
    def total_ms(self) -> float:
        return sum(self._timings_ms.values())
