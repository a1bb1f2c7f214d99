"""Human feedback end to end: the API flags a low-confidence answer into the labelling queue,
users rate and correct answers over /v1/feedback, labelling_queue shows what waits (materialised
with the real definitions), and a label becomes a reference answer that answer_eval judges (the
LLM is the local OpenAI-protocol server: no real model runs here)."""

import json
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.feedback import Feedback, FeedbackStore, open_feedback_store
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer, cite_first_source

QUESTION = "Is the canteen open on Fridays?"


def cites_except_about_the_canteen(messages: list[dict]) -> str:
    """A model that cites its sources (it passes the smoke test) except on one topic."""
    if "canteen" in messages[-1]["content"]:
        return "Yes, it is open."
    return cite_first_source(messages)


@pytest.fixture
def api(storage: Path, monkeypatch: pytest.MonkeyPatch):
    """The API over the test's storage with that model pinned in a serving release; the
    environment points Dagster there too."""
    environ = {
        "AIPLATFORM_STORAGE_DIR": str(storage),
        "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        "AIPLATFORM_AGENTS_REGISTRY": "",
        "AIPLATFORM_SERVING_SMOKE_MAX_NDCG_DROP": "1",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    key = create_key(storage / "serving" / "api_keys.yaml", "user", [Scope.QUERY])
    with FakeOpenAIServer(chat_reply=cites_except_about_the_canteen) as server:
        settings = load_settings({**environ, "AIPLATFORM_LLM_BASE_URL": server.base_url})
        monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
        published = publish_serving_release(settings, "test")
        assert published.flip is not None, published.decision
        with TestClient(create_app(settings)) as client:
            yield client, {"Authorization": f"Bearer {key}"}, settings


def test_a_flagged_answer_waits_for_a_label_and_the_label_feeds_answer_eval(api) -> None:
    client, headers, settings = api
    asked = client.post("/v1/query", json={"question": QUESTION}, headers=headers).json()
    assert asked["review"] == "low confidence: the answer cites no source"
    store = open_feedback_store(settings)
    assert [item.request_id for item in store.queue()] == [asked["request_id"]]

    defs = load_definitions()
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        queued = job.execute_in_process(asset_selection=[dg.AssetKey("labelling_queue")],
                                        instance=instance)  # fmt: skip
        metadata = queued.asset_materializations_for_node("labelling_queue")[0].metadata
        assert metadata["waiting"].value == 1 and metadata["labelled"].value == 0
        assert QUESTION in metadata["queue"].value

        labelled = client.post(
            "/v1/feedback",
            json={"request_id": asked["request_id"], "rating": 1, "labeller": "ana",
                  "corrected_answer": "The documents do not say."},
            headers=headers,
        )  # fmt: skip
        assert labelled.json() == {
            "recorded": True, "request_id": asked["request_id"], "label": True, "queued": False
        }  # fmt: skip
        assert store.queue() == []
        answered = job.execute_in_process(
            asset_selection=[dg.AssetKey("answer_eval")], instance=instance,
            run_config={"ops": {"answer_eval": {"config": {"use_cache": False}}}},
        )  # fmt: skip
        evaluated = answered.asset_materializations_for_node("answer_eval")[0].metadata
    assert evaluated["human_labels"].value == 1
    assert f"label-{asked['request_id']}" in evaluated["answers"].value


def test_a_critical_rating_queues_an_answer_the_api_did_not_flag(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.add(Feedback("r1", 5, "ana", question="fine?"))
    store.add(Feedback("r2", 2, "bo", question="What is the SLA?"))
    store.add(Feedback("r3", 4, "cy", critical=True, question="Legal hold?", note="check"))
    assert [(i.request_id, i.reason) for i in store.queue()] == [
        ("r2", "rated 2 by bo"),
        ("r3", "critical by cy"),
    ]
    store.add(Feedback("r2", 3, "dee", corrected_answer="99.9% monthly."))
    assert [i.request_id for i in store.queue()] == ["r3"]
    assert [(label.question, label.reference_answer) for label in store.labels()] == [
        ("What is the SLA?", "99.9% monthly.")
    ]
    assert store.mean_rating() == pytest.approx(3.5)


def test_feedback_on_an_answer_the_api_did_not_keep_needs_the_question(api) -> None:
    client, headers, _ = api
    refused = client.post(
        "/v1/feedback", json={"request_id": "unknown-1", "rating": 1, "labeller": "ana"},
        headers=headers,
    )  # fmt: skip
    assert refused.status_code == 422 and "send the question" in refused.json()["error"]
    bad = client.post(
        "/v1/feedback", json={"request_id": "x", "rating": 9, "labeller": "ana", "question": "q"},
        headers=headers,
    )  # fmt: skip
    assert bad.status_code == 422 and "rating" in bad.json()["error"]


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.add(Feedback("r1", 1, "ana", question="q1"))
    with (tmp_path / "feedback.jsonl").open("a") as torn:
        torn.write(json.dumps({"request_id": "r2"})[:9])
    assert [item.request_id for item in store.queue()] == ["r1"]
