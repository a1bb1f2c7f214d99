"""``GET /metrics`` as Prometheus reads it, after the requests a user makes: request counts and
latency per endpoint, stage latency, tokens and cost, cache hits, errors by kind, the release
served, month-to-date spend against the budget, and the newest drift report. The LLM is the
local OpenAI-protocol server (no real model can run here)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

QUESTION = "How long are vector index backups kept?"


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of the scrape, keyed by name and labels."""
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def query_key(settings: Settings) -> str:
    """A key with the query scope, created before the API starts (it loads the key file)."""
    return create_key(settings.paths.storage_dir / "serving" / "api_keys.yaml", "m", [Scope.QUERY])


def settings_with_llm(storage: Path, llm: FakeOpenAIServer, **extra: str) -> Settings:
    """The test's copy of the published storage, with a release that pins the model."""
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_LLM_BASE_URL": llm.base_url,
            "AIPLATFORM_LLM_MAX_RETRIES": "0",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            "AIPLATFORM_SERVING_MONTHLY_BUDGET_USD": "25",
            "AIPLATFORM_AGENTS_REGISTRY": "",
            **extra,
        }
    )
    publication = publish_serving_release(settings, "test")
    assert publication.flip is not None, publication.decision
    return settings


def test_metrics_count_requests_stages_tokens_cost_cache_and_errors(
    storage: Path, llm: FakeOpenAIServer
) -> None:
    settings = settings_with_llm(storage, llm)
    key = query_key(settings)
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        first = client.post("/v1/query", json={"question": QUESTION}, headers=headers).json()
        second = client.post("/v1/query", json={"question": QUESTION}, headers=headers).json()
        assert (first["kind"], second["kind"]) == ("generated", "cached")
        assert client.post("/v1/query", json={"question": QUESTION}).status_code == 401
        scrape = samples(client)

    ok = {"endpoint": "/v1/query", "method": "POST", "status": "200"}
    assert value(scrape, "aiplatform_http_requests_total", **ok) == 2
    assert value(scrape, "aiplatform_http_requests_total", **{**ok, "status": "401"}) == 1
    assert value(scrape, "aiplatform_errors_total", kind="unauthorized") == 1
    assert (
        value(scrape, "aiplatform_http_request_duration_seconds_count", endpoint="/v1/query") == 3
    )
    for stage in ("route", "retrieve", "generate"):
        count = value(scrape, "aiplatform_query_stage_duration_seconds_count", stage=stage)
        assert count >= 1, stage
    usage = first["usage"]
    assert (
        value(scrape, "aiplatform_llm_tokens_total", source="query", direction="prompt")
        == (usage["prompt_tokens"])
    )
    assert value(scrape, "aiplatform_llm_cost_usd_total", source="query") == pytest.approx(
        usage["cost_usd"]
    )
    assert usage["cost_usd"] > 0  # gpt-4o-mini has a price; the cached answer cost nothing
    assert value(scrape, "aiplatform_cache_lookups_total", result="miss") == 1
    assert value(scrape, "aiplatform_cache_lookups_total", result="hit") == 1
    assert value(scrape, "aiplatform_spend_month_to_date_usd") == pytest.approx(usage["cost_usd"])
    assert value(scrape, "aiplatform_monthly_budget_usd") == 25
    release = {
        "release_id": first["release_id"],
        "index_release": first["index_release"],
        "router_version": "none",
        "reranker_version": "none",
    }
    assert value(scrape, "aiplatform_release_info", **release) == 1


def test_month_to_date_spend_survives_a_restart(storage: Path, llm: FakeOpenAIServer) -> None:
    settings = settings_with_llm(storage, llm)
    key = query_key(settings)
    costs = []
    for question in (QUESTION, "Who is paged first?"):
        with TestClient(create_app(settings)) as client:  # a new process each time, in effect
            answer = client.post(
                "/v1/query", json={"question": question}, headers={"Authorization": f"Bearer {key}"}
            ).json()
            costs.append(answer["usage"]["cost_usd"])
            scrape = samples(client)
    assert value(scrape, "aiplatform_spend_month_to_date_usd") == pytest.approx(sum(costs))


def test_an_llm_that_is_down_still_answers_and_is_counted(
    storage: Path, llm: FakeOpenAIServer
) -> None:
    settings = settings_with_llm(storage, llm)
    key = query_key(settings)
    with TestClient(create_app(settings)) as client:
        llm.fail_next(5, status=503)
        response = client.post(
            "/v1/query",
            json={"question": QUESTION, "use_cache": False},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["kind"] == "extractive" and body["citations"]
        assert any(note.startswith("extractive answer: the LLM failed") for note in body["notes"])
        assert value(samples(client), "aiplatform_errors_total", kind="llm_unavailable") == 1


def test_a_redis_that_is_down_bypasses_the_cache_and_is_counted(
    storage: Path, llm: FakeOpenAIServer
) -> None:
    """The cache and the spend ledger on a Redis nobody listens on: answers still come."""
    down = "redis://127.0.0.1:1/0"
    settings = settings_with_llm(storage, llm, AIPLATFORM_REDIS_URL=down)
    key = query_key(settings)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/query", json={"question": QUESTION}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200 and response.json()["kind"] == "generated"
        scrape = samples(client)
    assert value(scrape, "aiplatform_cache_lookups_total", result="bypassed") == 1
    assert value(scrape, "aiplatform_errors_total", kind="spend_ledger") == 1
    assert ("aiplatform_spend_month_to_date_usd", frozenset()) not in scrape  # unknown, not 0


def test_the_newest_drift_report_is_exported(storage: Path, llm: FakeOpenAIServer) -> None:
    settings = settings_with_llm(storage, llm)
    reports = settings.paths.storage_dir / "monitoring" / "reports"
    reports.mkdir(parents=True)
    old = {"drifted": False, "features": [{"feature": "query_length", "psi": 0.01}]}
    new = {"drifted": True, "features": [{"feature": "query_length", "psi": 0.31},
                                          {"feature": "embedding", "psi": None}]}  # fmt: skip
    (reports / "2026-12-01.json").write_text(json.dumps(old))
    (reports / "2026-12-02.json").write_text(json.dumps(new))
    with TestClient(create_app(settings)) as client:
        scrape = samples(client)
    assert value(scrape, "aiplatform_drift_psi", feature="query_length") == 0.31
    assert value(scrape, "aiplatform_drift_detected") == 1
