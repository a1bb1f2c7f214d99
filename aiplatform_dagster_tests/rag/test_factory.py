"""The query engine as every process builds it: from settings, over one release, hot-swapped."""

from pathlib import Path

import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import EmbedderMismatch, IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster_tests.conftest import SMALL_CORPUS, write_corpus
from aiplatform_dagster_tests.stand_ins import HashEmbedder, documents_of, texts


def publish(storage: Path, files: dict[str, str], embedder) -> str:
    folder = write_corpus(storage.parent / f"docs-{len(list(storage.parent.iterdir()))}", files)
    documents, _ = load_documents(folder)
    summary = ingest(IndexRepository(storage / "ingestion"), documents, embedder)
    return summary.release.release_id


def test_a_live_engine_moves_to_the_next_release_and_in_flight_engines_keep_theirs(
    tmp_path: Path, embedder
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    first = publish(storage, SMALL_CORPUS, embedder)
    live = factory.LiveQueryEngine(load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)}))
    in_flight = live.engine
    assert live.release_id == first and live.refresh().moved is False

    second = publish(
        storage, {**SMALL_CORPUS, "new.md": "# GPUs\n\nThe GPU pool has T4s."}, embedder
    )
    reload = live.refresh()
    assert (reload.release_id, reload.moved, reload.error) == (second, True, None)
    hits = live.engine.retriever.search("which GPUs does the pool have", SearchMode.HYBRID, 1)
    assert hits[0].chunk.doc_id == "new.md"
    assert in_flight.retriever.release_id == first
    old_hits = in_flight.retriever.search("which GPUs does the pool have", SearchMode.HYBRID, 3)
    assert all(hit.chunk.doc_id != "new.md" for hit in old_hits)


def test_a_broken_next_release_leaves_the_last_good_one_serving(tmp_path: Path, embedder) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    first = publish(storage, SMALL_CORPUS, embedder)
    live = factory.LiveQueryEngine(load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)}))
    second = publish(storage, {"only.md": "# Only\n\nOne document now."}, embedder)
    repository = IndexRepository(storage / "ingestion")
    for segment in repository.open(second).segments:
        (segment.folder / "chunks.parquet").write_bytes(b"not parquet")
    reload = live.refresh()
    assert reload.release_id == first and not reload.moved
    assert "chunks.parquet" in reload.error
    assert live.engine.ask("When does a page escalate?").sources


def test_an_engine_refuses_a_release_another_embedder_built(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    ingest(IndexRepository(storage / "ingestion"), documents_of(texts(3)), HashEmbedder())
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)})
    with pytest.raises(EmbedderMismatch) as error:
        factory.build_query_engine(settings)
    message = str(error.value)
    assert "test-hash-embedder" in message and "all-MiniLM-L6-v2" in message
    assert "AIPLATFORM_EMBEDDING_MODEL" in message
