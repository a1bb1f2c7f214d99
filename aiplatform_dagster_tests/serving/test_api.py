"""The serving API as a client sees it: FastAPI's TestClient over the real app, the real live
engine on the sample release (MiniLM), the agent runtime with the fake model behind it."""

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from aiplatform_dagster.agents.checkpoints import migrate
from aiplatform_dagster.config import load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster_tests.agents.scripted_model import scripted_agent_model
from aiplatform_dagster_tests.conftest import REDIS_URL
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer
from aiplatform_dagster_tests.serving.served import aiplatform_serve
from aiplatform_dagster_tests.ui.dagster_ui import SHOTS, chromium


@pytest.fixture
def served(
    storage: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str], FakeOpenAIServer]]:
    keys = tmp_path / "keys.yaml"
    raw = {
        "query": create_key(keys, "analyst", [Scope.QUERY], 100),
        "agent": create_key(keys, "bot", [Scope.AGENT], 100),
        "slow": create_key(keys, "limited", [Scope.QUERY], 2),
    }
    with FakeOpenAIServer(chat_reply=scripted_agent_model) as server:
        settings = load_settings(
            {
                "AIPLATFORM_STORAGE_DIR": str(storage),
                "AIPLATFORM_AGENTS_TRACE_DIR": str(tmp_path / "traces"),
                "AIPLATFORM_AGENTS_REGISTRY": "",
                "AIPLATFORM_SERVING_API_KEYS_FILE": str(keys),
                "AIPLATFORM_SERVING_MAX_BODY_BYTES": "4096",
                "AIPLATFORM_LLM_BASE_URL": server.base_url,
                "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            }
        )
        migrate(settings)
        with TestClient(create_app(settings)) as client:
            yield client, raw, server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_and_readiness_name_the_live_release(served, published):
    client, _, _ = served
    manifest = published[1]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["release_id"] == manifest.release_id
    assert ready.json()["index_release"] == manifest.index_release
    assert ready.json()["agents"] == "ready"


def test_a_question_is_answered_with_citations_and_ids(served, published):
    client, keys, _ = served
    response = client.post(
        "/v1/query",
        json={"question": "How long are vector index backups kept?"},
        headers={**bearer(keys["query"]), "X-Request-ID": "req-42"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["release_id"], body["index_release"]) == (
        published[1].release_id,
        published[1].index_release,
    )
    assert body["request_id"] == response.headers["X-Request-ID"] == "req-42"
    assert body["citations"] and body["sources"]
    assert body["text"]


def test_keys_and_scopes_are_enforced(served):
    client, keys, _ = served
    missing = client.post("/v1/query", json={"question": "backups"})
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
    assert missing.headers["X-Request-ID"] == missing.json()["request_id"]
    unknown = client.post("/v1/query", json={"question": "x"}, headers=bearer("aip_nope"))
    assert unknown.status_code == 401
    outside = client.post("/v1/query", json={"question": "x"}, headers=bearer(keys["agent"]))
    assert outside.status_code == 403 and "query" in outside.json()["error"]
    by_header = client.post(
        "/v1/agent", json={"request": "hi"}, headers={"X-API-Key": keys["query"]}
    )
    assert by_header.status_code == 403


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(served):
    client, keys, _ = served
    codes = [
        client.post("/v1/query", json={"question": "paging"}, headers=bearer(keys["slow"]))
        for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"question": "x", "colour": "red"}, 422, "colour"),
        ({"question": 42}, 422, "question"),
        ({"question": ""}, 422, "question"),
        ({"question": "x", "top_n": 0}, 422, "top_n"),
        ({"question": "x" * 3000}, 413, "characters"),
    ],
)
def test_bad_input_gets_a_clear_4xx(served, payload, status, message):
    client, keys, _ = served
    response = client.post("/v1/query", json=payload, headers=bearer(keys["query"]))
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_malformed_json_and_a_huge_body_are_refused(served):
    client, keys, _ = served
    broken = client.post(
        "/v1/query",
        content=b'{"question": ',
        headers={**bearer(keys["query"]), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422 and "invalid request" in broken.json()["error"]
    huge = client.post(
        "/v1/query",
        content=b'{"question": "' + b"a" * 10_000_000 + b'"}',
        headers={**bearer(keys["query"]), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and "4096 bytes" in huge.json()["error"]


def test_agents_run_wait_for_approval_and_resume_over_http(served):
    client, keys, _ = served
    headers = bearer(keys["agent"])
    done = client.post(
        "/v1/agent",
        json={"request": 'CALL calculator {"expression": "6*7"}', "agent": "researcher"},
        headers=headers,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and "42" in done.json()["answer"]
    request = 'Report. CALL publish_report {"title": "T", "body": "B"}'
    paused = client.post(
        "/v1/agent", json={"request": request, "agent": "reporter"}, headers=headers
    )
    thread = paused.json()["thread_id"]
    assert paused.json()["status"] == "waiting"
    assert client.get(f"/v1/agent/{thread}", headers=headers).json()["status"] == "waiting"
    resumed = client.post(
        f"/v1/agent/{thread}/resume", json={"decision": "approve"}, headers=headers
    )
    assert resumed.json()["status"] == "completed"
    again = client.post(f"/v1/agent/{thread}/resume", json={"decision": "approve"}, headers=headers)
    assert again.status_code == 409 and "nothing to resume" in again.json()["error"]
    assert client.get("/v1/agent/no-such", headers=headers).status_code == 404


def test_no_raw_key_is_ever_logged(served, caplog):
    client, keys, _ = served
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/query", json={"question": "backups"}, headers=bearer(keys["query"]))
        client.post("/v1/query", json={"question": "x"}, headers=bearer(keys["agent"]))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/v1/query" in logged  # the requests were logged
    assert all(raw not in logged for raw in keys.values())


def test_without_an_llm_the_agent_endpoints_say_how_to_configure_one(storage: Path, tmp_path: Path):
    keys = tmp_path / "keys.yaml"
    raw = create_key(keys, "bot", [Scope.AGENT, Scope.QUERY], 100)
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_SERVING_API_KEYS_FILE": str(keys),
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        }
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/agent", json={"request": "hi"}, headers=bearer(raw))
        assert response.status_code == 503
        assert "AIPLATFORM_LLM_BASE_URL" in response.json()["error"]
        assert "AIPLATFORM_LLM_BASE_URL" in client.get("/readyz").json()["agents"]
        answer = client.post("/v1/query", json={"question": "backups"}, headers=bearer(raw))
        assert answer.status_code == 200 and answer.json()["kind"] == "extractive"


def test_aiplatform_serve_answers_over_real_http(storage: Path, tmp_path: Path):
    """`aiplatform serve` as a user starts it: uvicorn on a loopback port, a key from the CLI."""
    with aiplatform_serve(storage, tmp_path) as api:
        response = httpx.post(
            f"{api.base}/v1/query",
            json={"question": "How long are vector index backups kept?"},
            headers={"Authorization": f"Bearer {api.key}"},
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["citations"]
        assert httpx.get(f"{api.base}/openapi.json").json()["paths"].keys() >= {
            "/v1/query", "/v1/agent", "/healthz", "/readyz"
        }  # fmt: skip
        open_the_api_docs_in_a_browser(api.base)
    assert "POST /v1/query" in api.log.read_text()  # the access log was written ...
    assert api.key not in api.log.read_text()  # ... and never shows a key


def open_the_api_docs_in_a_browser(base: str) -> None:
    """The OpenAPI page as a developer opens it: Swagger UI renders every endpoint, with no
    request leaving the machine (no CDN: air-gapped clusters get the same page)."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        hosts: set[str] = set()
        page.on("request", lambda request: hosts.add(httpx.URL(request.url).host))
        page.goto(f"{base}/docs")
        for path in ("/v1/query", "/v1/agent", "/v1/agent/{thread_id}/resume", "/readyz"):
            expect(page.get_by_text(path, exact=True).first).to_be_visible(timeout=30_000)
        page.get_by_text("/v1/query", exact=True).first.click()
        expect(page.get_by_text("QueryRequest").first).to_be_visible()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SHOTS / "28-api-docs.png")
        assert hosts == {"127.0.0.1"}, hosts


def test_two_replicas_on_one_redis_share_a_keys_rate_limit(
    storage: Path, tmp_path: Path, redis_prefix: str
) -> None:
    """The limiter that waits on the network (Redis) runs in a worker thread, not the event
    loop, and both API replicas draw from one bucket."""
    keys = tmp_path / "keys.yaml"
    raw = create_key(keys, "limited", [Scope.QUERY], 2)
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_SERVING_API_KEYS_FILE": str(keys),
            "AIPLATFORM_REDIS_URL": REDIS_URL,
            "AIPLATFORM_REDIS_PREFIX": redis_prefix,
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        }
    )
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        codes = [
            replica.post("/v1/query", json={"question": "paging"}, headers=bearer(raw))
            for replica in (first, second, first)
        ]
    assert [reply.status_code for reply in codes] == [200, 200, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1
