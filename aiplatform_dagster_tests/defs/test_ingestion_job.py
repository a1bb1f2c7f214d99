"""The ingestion job, materialised in-process with the real definitions and real storage."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import iter_candidate_files
from aiplatform_dagster.rag.query.retriever import Retriever, SearchMode
from aiplatform_dagster_tests.conftest import write_corpus
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer
from aiplatform_dagster_tests.postgres import temporary_database

pytestmark = pytest.mark.slow


def run_ingestion(
    run_config: dict | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    job = load_definitions().resolve_job_def("ingestion_job")
    return job.execute_in_process(
        run_config=run_config or {}, instance=instance, raise_on_error=raise_on_error
    )


def repository_in(storage: Path) -> IndexRepository:
    return IndexRepository(storage / "ingestion")


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def test_sample_corpus_is_ingested_and_searchable(platform_env, embedder) -> None:
    storage = platform_env(SAMPLE_CORPUS_DIR)
    result = run_ingestion()

    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "chunks_are_valid",
        "embeddings_are_valid",
        "release_is_consistent",
    }
    assert all(c.passed for c in checks)

    files = list(iter_candidate_files(SAMPLE_CORPUS_DIR))
    assert len(files) >= 30
    documents = materialization_metadata(result, "source_documents")
    assert documents["dagster/row_count"] == len(files)
    assert documents["skipped_files"] == 0

    repository = repository_in(storage)
    release = repository.open_pointer()
    chunks = release.chunks
    published = materialization_metadata(result, "current_release")
    assert published["release_id"] == release.release_id == repository.pointer()
    assert published["previous_release"] == "none"
    built = materialization_metadata(result, "index_release")
    assert built["release_id"] == release.release_id and built["dagster/row_count"] == len(chunks)
    assert built["manifest"]["corpus_hash"] == release.manifest["corpus_hash"]
    assert materialization_metadata(result, "document_chunks")["dagster/row_count"] == len(chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks) > len(files)
    assert materialization_metadata(result, "chunk_embeddings")["computed"] == len(chunks)
    assert release.vectors.count() == len(chunks) == len(release.bm25)

    retriever = Retriever.from_release(release, embedder)
    for mode in SearchMode:
        top = retriever.search("When does the on-call rotation hand over?", mode, k=3)
        assert top[0].chunk.doc_id == "operations/on_call_runbook.md", mode
    exact = retriever.search("AIP-4031", SearchMode.BM25, k=1)
    assert exact[0].chunk.doc_id == "operations/troubleshooting.txt"


def test_second_run_reembeds_only_changes_and_forgets_removed_documents(
    platform_env, corpus_dir: Path, embedder
) -> None:
    storage = platform_env(corpus_dir)
    run_ingestion()
    repository = repository_in(storage)
    first = repository.open_pointer()
    before = {c.chunk_id: c for c in first.chunks}

    (corpus_dir / "runbooks/paging.md").unlink()
    write_corpus(
        corpus_dir,
        {
            "guides/embeddings.txt": (corpus_dir / "guides/embeddings.txt").read_text()
            + "\n\nA new paragraph about quantised int8 embeddings for cheaper storage.",
            "guides/rollback.md": "# Rollback\n\nMove the champion alias back to roll back.",
        },
    )
    result = run_ingestion()

    release = repository.open_pointer()
    after = {c.chunk_id: c for c in release.chunks}
    new_ids = after.keys() - before.keys()
    embedded = materialization_metadata(result, "chunk_embeddings")
    assert embedded["computed"] == len(new_ids) > 0
    assert embedded["kept"] == len(after) - len(new_ids) > 0
    assert release.manifest["predecessor"] == first.release_id == release.manifest["base"]
    assert {c.doc_id for c in after.values()} == {
        "guides/embeddings.txt",
        "guides/bm25.html",
        "guides/rollback.md",
    }
    assert materialization_metadata(result, "current_release")["previous_release"] == (
        first.release_id
    )

    retriever = Retriever.from_release(release, embedder)
    for mode in SearchMode:
        hits = retriever.search("who is paged when the primary does not acknowledge", mode, k=10)
        assert all(hit.chunk.doc_id != "runbooks/paging.md" for hit in hits)
    assert set(release.bm25.doc_ids) == set(after)


def test_full_refresh_reembeds_everything(platform_env, corpus_dir: Path) -> None:
    platform_env(corpus_dir)
    run_ingestion()
    result = run_ingestion({"ops": {"document_chunks": {"config": {"reuse_previous": False}}}})
    embedded = materialization_metadata(result, "chunk_embeddings")
    assert embedded["kept"] == embedded["copied"] == 0 and embedded["computed"] > 0


def test_bad_files_are_reported_and_nothing_indexed_is_lost(
    platform_env, corpus_dir: Path, embedder
) -> None:
    storage = platform_env(corpus_dir)
    run_ingestion()
    repository = repository_in(storage)
    indexed_docs = {c.doc_id for c in repository.open_pointer().chunks}

    write_corpus(
        corpus_dir,
        {
            "broken/binary.md": b"\x00\x01\x02 not text",
            "broken/latin1.txt": "caf\u00e9".encode("latin-1"),
            "broken/empty.html": "<html><body>  </body></html>",
        },
    )
    result = run_ingestion()

    assert result.success
    documents = materialization_metadata(result, "source_documents")
    assert documents["skipped_files"] == 3
    skipped_table = documents["skipped"]
    assert "broken/binary.md" in skipped_table and "UTF-8" in skipped_table
    release = repository.open_pointer()
    assert {c.doc_id for c in release.chunks} == indexed_docs
    assert release.vectors.count() == len(release.chunks)


def test_a_check_run_on_its_own_finds_the_latest_build_and_current_stays(
    platform_env, corpus_dir: Path
) -> None:
    storage = platform_env(corpus_dir)
    repository = repository_in(storage)
    run_ingestion()
    published = repository.pointer()
    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nA page about GPU quotas."})
    with dg.instance_for_test() as instance:
        embedded = (
            load_definitions()
            .resolve_job_def("ingestion_job")
            .execute_in_process(
                instance=instance,
                asset_selection=[
                    dg.AssetKey(name)
                    for name in ("source_documents", "document_chunks", "chunk_embeddings")
                ],
            )
        )
        build = repository.builds_dir / embedded.run_id
        vectors = np.load(build / "vectors.npy")
        np.save(build / "vectors.npy", vectors * 3.0)
        defs = load_definitions()
        check_job = dg.define_asset_job(
            "check_embeddings",
            selection=dg.AssetSelection.checks_for_assets(dg.AssetKey("chunk_embeddings")),
        )
        job = dg.Definitions.merge(defs, dg.Definitions(jobs=[check_job])).resolve_job_def(
            "check_embeddings"
        )
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "embeddings_are_valid"
    assert not evaluation.passed
    assert "unit_norm" in evaluation.description
    assert repository.pointer() == published


def test_an_edit_during_a_run_never_reaches_queries_before_the_release_is_published(
    platform_env, corpus_dir: Path, embedder
) -> None:
    """The defect of the single-slot design: new chunks and BM25 served with old vectors."""
    storage = platform_env(corpus_dir)
    run_ingestion()
    repository = repository_in(storage)
    live = repository.open_pointer()
    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nA freshly added page on GPUs."})
    job = load_definitions().resolve_job_def("ingestion_job")
    partial = job.execute_in_process(
        asset_selection=[dg.AssetKey("source_documents"), dg.AssetKey("document_chunks")]
    )
    assert partial.success
    assert repository.pointer() == live.release_id
    retriever = Retriever.from_release(repository.open_pointer(), embedder)
    dense = retriever.search("freshly added page on GPUs", SearchMode.DENSE, k=5)
    assert len(dense) == min(5, len(live.chunks))  # every id resolves: none silently dropped
    for mode in SearchMode:
        hits = retriever.search("freshly added page on GPUs", mode, k=5)
        assert all(hit.chunk.doc_id != "guides/new.md" for hit in hits)


def test_an_empty_documents_folder_is_refused_and_the_release_is_kept(
    platform_env, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = platform_env(corpus_dir)
    run_ingestion()
    repository = repository_in(storage)
    published = repository.pointer()
    empty = tmp_path / "unmounted"
    empty.mkdir()
    monkeypatch.setenv("AIPLATFORM_DOCUMENTS_DIR", str(empty))
    result = run_ingestion(raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("source_documents").error.cause.message
    assert "Refusing to remove 3 of 3" in message and "allow_mass_removal" in message
    assert repository.pointer() == published
    allowed = {"ops": {"source_documents": {"config": {"allow_mass_removal": True}}}}
    assert run_ingestion(allowed).success
    assert repository.open_pointer().chunks == []


def test_missing_documents_folder_fails_with_a_clear_message(platform_env, tmp_path: Path) -> None:
    platform_env(tmp_path / "does-not-exist")
    job = load_definitions().resolve_job_def("ingestion_job")
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("source_documents")
    assert "AIPLATFORM_DOCUMENTS_DIR" in failure.error.cause.message


def test_an_openai_compatible_embedder_is_a_configuration_switch(
    platform_env, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = platform_env(corpus_dir)
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("AIPLATFORM_EMBEDDING_PROVIDER", "openai")
        monkeypatch.setenv("AIPLATFORM_EMBEDDING_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("AIPLATFORM_EMBEDDING_DIMENSION", "32")
        result = run_ingestion()
        embedding_requests = [r for r in server.requests if r.path.endswith("/embeddings")]

    assert all(c.passed for c in result.get_asset_check_evaluations())
    embedded = materialization_metadata(result, "chunk_embeddings")
    assert embedded["model"] == "openai:text-embedding-3-small:32"
    assert embedding_requests[0].headers["authorization"] == "Bearer test-key"
    release = repository_in(storage).open_pointer()
    assert release.vectors.dimension == 32
    assert release.manifest["embedder"]["model_id"] == "openai:text-embedding-3-small:32"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    with temporary_database("aiplatform_test") as url:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; dagster-postgres speaks psycopg2.
        yield url.replace("postgresql://", "postgresql+psycopg2://", 1)


def test_runs_and_metadata_persist_in_a_postgresql_instance(
    platform_env, corpus_dir: Path, postgres_url: str
) -> None:
    """The production instance swaps SQLite for PostgreSQL by configuration alone."""
    platform_env(corpus_dir)
    overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        job = load_definitions().resolve_job_def("ingestion_job")
        result = job.execute_in_process(instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("current_release"))
        stored = event.asset_materialization.metadata
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("chunk_embeddings"), "embeddings_are_valid"), limit=1
        )
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert stored["dagster/row_count"].value > 0 and stored["release_id"].value
    assert len(checks) == 1
