"""Costs must follow the price table (or admit they are unknown); stage timings must add up."""

import json
import time
from pathlib import Path

import pytest

from aiplatform_dagster.rag.query.accounting import PriceTable, StageTimer


def test_default_prices_give_list_cost_per_call() -> None:
    table = PriceTable()

    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("gpt-4o", 2_000, 500) == pytest.approx(2_000 * 2.5e-6 + 500 * 10e-6)
    assert table.cost("text-embedding-3-small", 10_000, 0) == pytest.approx(0.0002)


def test_dated_snapshots_are_priced_like_their_model() -> None:
    table = PriceTable()

    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)


def test_an_unknown_model_costs_nothing_and_is_flagged_unpriced() -> None:
    table = PriceTable()

    usage = table.usage("llama-3-70b-local", 1200, 300)

    assert table.cost("llama-3-70b-local", 1200, 300) == 0.0
    assert usage.cost_usd == 0.0
    assert not usage.priced
    assert (usage.prompt_tokens, usage.completion_tokens) == (1200, 300)


def test_usage_of_a_call_and_of_a_cache_hit() -> None:
    table = PriceTable()

    billed = table.usage("gpt-4o-mini", 1000, 200)
    cached = table.usage("gpt-4o-mini", 1000, 200, cached=True)

    assert billed.cost_usd == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    assert billed.priced and not billed.cached
    assert cached.cost_usd == 0.0 and cached.cached


def test_a_json_file_overrides_and_extends_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"gpt-4o-mini": {"input": 1, "output": 2}, "my-llm": {"input": 3, "output": 4}})
    )

    table = PriceTable.from_json(path)

    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("my-llm", 1_000_000, 0) == pytest.approx(3.0)
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)


@pytest.mark.parametrize(
    "content",
    ['["gpt-4o"]', '{"m": {"input": 1}}', '{"m": {"input": -1, "output": 1}}', "not json"],
)
def test_an_invalid_price_file_says_what_format_is_expected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)

    with pytest.raises(ValueError, match="USD per 1M tokens"):
        PriceTable.from_json(path)


def test_stage_timer_records_each_stage_and_the_total() -> None:
    timer = StageTimer()

    with timer.stage("retrieve"):
        time.sleep(0.02)
    with timer.stage("generate"):
        time.sleep(0.04)

    timings = timer.timings_ms
    assert list(timings) == ["retrieve", "generate"]
    assert 20 <= timings["retrieve"] < 1000
    assert 40 <= timings["generate"] < 1000
    assert timer.total_ms == pytest.approx(sum(timings.values()))


def test_a_repeated_stage_accumulates_and_a_failing_stage_is_still_timed() -> None:
    timer = StageTimer()

    for _ in range(2):
        with timer.stage("rerank"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), timer.stage("generate"):
        time.sleep(0.01)
        raise RuntimeError("LLM timed out")

    assert timer.timings_ms["rerank"] >= 20
    assert timer.timings_ms["generate"] >= 10
