"""Serving releases as an operator meets them: publish (pinned, smoke-tested, flipped only when
it passes), publish again with nothing new, roll back, race another publisher, and a live engine
that follows the flips while requests in flight keep theirs. Real ingestion with MiniLM on the
sample corpus, copied per test so each owns its pointers."""

import json
import shutil
from pathlib import Path

import pytest

from aiplatform_dagster.cli import main
from aiplatform_dagster.config import SAMPLE_CORPUS_DIR, Settings, load_settings
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.models.onnx_inference import OnnxQueryEmbedder
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.factory import LiveQueryEngine
from aiplatform_dagster.rag.index.releases import IndexRepository, Retention
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.prompts import PROMPT_VERSION
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.release import (
    INDEX_LIVE,
    INDEX_PREVIOUS,
    ServingReleaseError,
    follow_live,
    open_serving_releases,
)
from aiplatform_dagster.who import cli_operator
from aiplatform_dagster_tests.conftest import write_corpus
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer
from aiplatform_dagster_tests.onnx_models import INT8_COSINE_MEAN, INT8_COSINE_MIN


@pytest.fixture
def settings(sample_repository: IndexRepository, tmp_path: Path) -> Settings:
    storage = tmp_path / "storage"
    shutil.copytree(sample_repository.root, storage / "ingestion")
    return load_settings(
        {"AIPLATFORM_STORAGE_DIR": str(storage), "AIPLATFORM_MONITORING_QUERY_LOG": "false"}
    )


def reingest(settings: Settings, embedder, files: dict[str, str] | None = None) -> str:
    """A new index release: the sample corpus plus ``files`` (or only ``files``, to make a
    release that has lost most of what the golden queries ask about)."""
    folder = settings.paths.storage_dir.parent / "docs"
    shutil.rmtree(folder, ignore_errors=True)
    if files is None:
        shutil.copytree(SAMPLE_CORPUS_DIR, folder)
        write_corpus(folder, {"extra/new.md": "# Drill\n\nThe BLUEHERON drill runs on Fridays."})
    else:
        write_corpus(folder, files)
    documents, _ = load_documents(folder)
    repository = IndexRepository(settings.paths.storage_dir / "ingestion")
    return ingest(repository, documents, embedder).release.release_id


def test_the_first_release_pins_what_is_configured_and_goes_live(settings: Settings) -> None:
    publication = publish_serving_release(settings, "test")
    manifest, report = publication.manifest, publication.report
    releases = open_serving_releases(settings)
    assert publication.flip is not None and publication.flip.kind == "publish"
    assert releases.live().release == manifest.release_id and releases.live().previous is None
    assert manifest.index_release == releases.index.pointer("current")
    assert manifest.prompt_version == PROMPT_VERSION
    assert (manifest.router, manifest.reranker) == (None, None)  # rules, no reranking
    assert (manifest.inference, manifest.inference_gate) == ("torch", {})  # int8 not asked for
    assert manifest.query["dense_weight"] == 0.7 and manifest.query["top_n"] == 3
    assert report.failures == [] and report.score > 0.5, report  # the golden set fits the sample
    assert manifest.smoke["passed"] is True
    assert releases.index.pointer(INDEX_LIVE) == manifest.index_release

    again = publish_serving_release(settings, "test")
    assert again.flip is None and again.report is None
    assert again.decision.startswith(f"unchanged: the live release {manifest.release_id}")
    assert len(releases.flips()) == 1


def test_a_new_index_release_publishes_and_rollback_returns_to_the_one_before(
    settings: Settings, embedder
) -> None:
    first = publish_serving_release(settings, "test").manifest
    new_index = reingest(settings, embedder)
    second = publish_serving_release(settings, "test")
    releases = open_serving_releases(settings)
    assert second.flip is not None and second.manifest.index_release == new_index
    assert second.report.baseline_release == first.release_id
    assert releases.live().previous == first.release_id

    # Retention keeps only one release by age and count, yet never the ones serving can return to.
    releases.index.apply_retention(Retention(keep=1, keep_days=0))
    releases.index.open(first.index_release).load()

    back = releases.rollback("test", "bad answers", expected=second.manifest.release_id)
    assert (back.release, back.previous, back.kind) == (
        first.release_id,
        second.manifest.release_id,
        "rollback",
    )
    assert releases.index.pointer(INDEX_LIVE) == first.index_release
    assert releases.index.pointer(INDEX_PREVIOUS) == new_index
    with pytest.raises(ServingReleaseError, match="someone flipped it meanwhile"):
        releases.rollback("test", "stale", expected=second.manifest.release_id)
    assert [flip.flip for flip in releases.flips()] == [1, 2, 3]


def test_a_release_that_scores_worse_is_stored_but_never_goes_live(
    settings: Settings, embedder
) -> None:
    first = publish_serving_release(settings, "test").manifest
    reingest(settings, embedder, {"only/one.md": "# Lunch\n\nThe canteen opens at noon."})
    refused = publish_serving_release(settings, "test")
    releases = open_serving_releases(settings)
    assert refused.flip is None and refused.report.regressed
    assert refused.decision.startswith("not published: ")
    assert f"vs {first.smoke['score']:.4f} on the live release {first.release_id}" in (
        refused.decision
    )
    assert releases.live().release == first.release_id
    assert releases.open(refused.manifest.release_id).smoke["passed"] is False


def test_a_publisher_that_lost_a_race_flips_nothing(settings: Settings, embedder) -> None:
    first = publish_serving_release(settings, "test").manifest
    reingest(settings, embedder)
    second = publish_serving_release(settings, "test").manifest
    releases = open_serving_releases(settings)
    with pytest.raises(ServingReleaseError, match=r"moved from .* while"):
        releases.publish(second.release_id, expected=None, by="late", reason="raced")
    assert releases.live().release == second.release_id
    assert releases.live().previous == first.release_id


def test_the_live_engine_follows_flips_and_keeps_serving_through_a_corrupt_manifest(
    settings: Settings, embedder
) -> None:
    first = publish_serving_release(settings, "test").manifest
    live = LiveQueryEngine(settings, follow_live(settings))
    assert live.snapshot()[0] == first.release_id

    reingest(settings, embedder)
    second = publish_serving_release(settings, "test").manifest
    in_flight = live.engine
    reload = live.refresh()
    assert (reload.moved, reload.name, reload.release_id) == (
        True,
        second.release_id,
        second.index_release,
    )
    assert in_flight.retriever.release_id == first.index_release  # the request in flight
    assert "BLUEHERON" in live.engine.ask("When does the BLUEHERON drill run?").text

    releases = open_serving_releases(settings)
    releases.rollback("test", "back")
    (settings.paths.storage_dir / "serving" / "releases" / f"{first.release_id}.json").write_text(
        "{ not json"
    )
    broken = live.refresh()
    assert broken.moved is False and "unreadable or corrupt" in broken.error
    assert live.snapshot()[0] == second.release_id  # the last good release keeps serving
    assert live.engine.ask("When does the BLUEHERON drill run?").citations


def test_a_release_for_another_prompt_version_is_refused(settings: Settings) -> None:
    manifest = publish_serving_release(settings, "test").manifest
    path = settings.paths.storage_dir / "serving" / "releases" / f"{manifest.release_id}.json"
    path.write_text(path.read_text().replace(PROMPT_VERSION, "rag-answer-v0"))
    with pytest.raises(ServingReleaseError, match="pins prompt rag-answer-v0"):
        LiveQueryEngine(settings, follow_live(settings))


def test_nothing_published_says_how_to_publish(settings: Settings) -> None:
    with pytest.raises(ServingReleaseError, match="materialise serving_release"):
        LiveQueryEngine(settings, follow_live(settings))


def test_a_model_that_answers_without_citing_is_never_published(settings: Settings) -> None:
    """The LLM (the local OpenAI-protocol server: no real model runs here) ignores the prompt's
    citation rule; the release it would serve fails the smoke test and stays off."""
    first = publish_serving_release(settings, "test").manifest
    with FakeOpenAIServer(chat_reply=lambda _: "Backups are kept for a while.") as server:
        with_llm = settings.replace(llm={"base_url": server.base_url, "model": "uncited"})
        refused = publish_serving_release(with_llm, "test")
    assert refused.flip is None and refused.manifest.llm_model == "uncited"
    assert refused.decision.startswith("not published: 5/5 questions failed end to end")
    assert "the model answered without citing a source" in refused.report.failures[0]
    assert open_serving_releases(settings).live().release == first.release_id


def test_a_release_serves_the_llm_it_was_tested_with(settings: Settings) -> None:
    """Configuring a model after publishing changes nothing until a release pins it."""
    extractive = publish_serving_release(settings, "test").manifest
    with FakeOpenAIServer() as server:
        with_llm = settings.replace(llm={"base_url": server.base_url, "model": "m-1"})
        live = LiveQueryEngine(with_llm, follow_live(with_llm))
        assert live.engine.ask("How long are vector index backups kept?").kind == "extractive"
        generated = publish_serving_release(with_llm, "test")
        assert generated.flip is not None and generated.manifest.llm_model == "m-1"
        assert live.refresh().moved
        answer = live.engine.ask("How long are vector index backups kept?")
        assert (answer.kind, answer.model) == ("generated", "m-1") and answer.citations
    assert extractive.llm_model is None


def test_the_release_commands(settings: Settings, embedder, monkeypatch, capsys) -> None:
    """`aiplatform release publish|list|show|rollback` as an operator types them."""
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(settings.paths.storage_dir))
    monkeypatch.setenv("AIPLATFORM_MONITORING_QUERY_LOG", "false")
    assert main(["release", "list"]) == 0
    assert "no serving release published yet" in capsys.readouterr().out
    assert main(["release", "show"]) == 2
    assert "materialise serving_release" in capsys.readouterr().err

    assert main(["release", "publish"]) == 0
    assert "published: first serving release" in capsys.readouterr().out
    reingest(settings, embedder)
    assert main(["release", "publish"]) == 0
    capsys.readouterr()
    live = open_serving_releases(settings).live()
    assert main(["release", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["release_id"] == live.release

    assert main(["release", "rollback", "--reason", "pager went off"]) == 0
    assert f"live: {live.previous} (was {live.release})" in capsys.readouterr().out
    assert main(["release", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "rollback" in lines[2] and "pager went off" in lines[2]
    assert f"by {cli_operator()}" in lines[2]


INT8_ALLOWED = {"inference": "onnx-int8", "onnx_max_ndcg_loss": 0.03}
"""One top-1 swap among the 40 golden queries costs about 0.009; the int8 MiniLM makes one."""


def seed_onnx(settings: Settings, cache: Path) -> None:
    """The session's ONNX files where the platform keeps them, so no test exports again."""
    shutil.copytree(cache, factory.onnx_cache(settings), dirs_exist_ok=True)


def test_asking_for_int8_pins_it_when_the_gate_passes_and_the_live_engine_follows(
    settings: Settings, int8_cache: Path
) -> None:
    publish_serving_release(settings, "test")
    live = LiveQueryEngine(settings, follow_live(settings))
    assert type(live.engine.retriever.embedder.inner) is SentenceTransformerEmbedder

    seed_onnx(settings, int8_cache)
    with_int8 = settings.replace(query=INT8_ALLOWED)
    publication = publish_serving_release(with_int8, "test")
    manifest, gate = publication.manifest, publication.manifest.inference_gate
    assert publication.flip is not None and manifest.inference == "onnx-int8", gate
    assert gate["passed"] is True and gate["loss"] <= 0.03
    assert gate["cosine_mean"] > INT8_COSINE_MEAN and gate["cosine_min"] > INT8_COSINE_MIN
    assert open_serving_releases(settings).open(manifest.release_id).inference == "onnx-int8"
    assert live.refresh().moved
    assert type(live.engine.retriever.embedder.inner) is OnnxQueryEmbedder
    assert live.engine.ask("What does error AIP-4031 mean?").citations
    assert publish_serving_release(with_int8, "test").flip is None  # nothing changed

    back = publish_serving_release(settings, "test")  # int8 no longer asked for
    assert back.flip is not None and back.manifest.inference == "torch"
    assert live.refresh().moved
    assert type(live.engine.retriever.embedder.inner) is SentenceTransformerEmbedder


def test_the_float_onnx_path_is_pinned_at_no_loss_and_served_sleeping_between_calls(
    settings: Settings, float_onnx_cache: Path
) -> None:
    seed_onnx(settings, float_onnx_cache)
    with_onnx = settings.replace(query={"inference": "onnx"})  # the default allowance, 0.005
    publication = publish_serving_release(with_onnx, "test")
    manifest, gate = publication.manifest, publication.manifest.inference_gate
    assert publication.flip is not None and manifest.inference == "onnx", gate
    assert gate["loss"] == 0.0 and gate["cosine_min"] > 0.9999
    live = LiveQueryEngine(settings, follow_live(settings))
    encoder = live.engine.retriever.embedder.inner
    assert type(encoder) is OnnxQueryEmbedder and encoder.onnx_path.parent == (
        factory.onnx_cache(settings)
    )
    options = encoder.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert live.engine.ask("What does error AIP-4031 mean?").citations


def test_a_failed_onnx_gate_publishes_the_pytorch_path_and_says_why(
    settings: Settings, broken_int8_cache: Path
) -> None:
    seed_onnx(settings, broken_int8_cache)
    with_int8 = settings.replace(query=INT8_ALLOWED)
    publication = publish_serving_release(with_int8, "test")
    manifest, gate = publication.manifest, publication.manifest.inference_gate
    assert publication.flip is not None  # a failed gate is not a refusal
    assert manifest.inference == "torch" and gate["passed"] is False and gate["loss"] > 0.03
    assert gate["decision"].startswith("PyTorch kept: routed ndcg@10")
    again = publish_serving_release(with_int8, "test")  # the gate refuses again: no new release
    assert again.flip is None and again.manifest.release_id == manifest.release_id


def test_a_manifest_written_before_the_onnx_paths_reads_as_pytorch(
    settings: Settings,
) -> None:
    manifest = publish_serving_release(settings, "test").manifest
    path = settings.paths.storage_dir / "serving" / "releases" / f"{manifest.release_id}.json"
    older = json.loads(path.read_text())
    del older["inference"], older["inference_gate"]
    path.write_text(json.dumps(older))
    read = open_serving_releases(settings).open(manifest.release_id)
    assert (read.inference, read.inference_gate) == ("torch", {})
    assert publish_serving_release(settings, "test").flip is None  # it pins the same as now
