"""search_knowledge_base over a real index release of a small corpus, built with the stand-in
embedder so no model loads: the passages come back as citable sources."""

from pathlib import Path

from aiplatform_dagster.agents.tools.base import ToolContext, ToolRegistry, ToolRunner, ToolStatus
from aiplatform_dagster.agents.tools.knowledge_base import search_knowledge_base_tool
from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.rag.factory import build_query_engine
from aiplatform_dagster.rag.index.releases import CURRENT, IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster_tests.conftest import SMALL_CORPUS, write_corpus
from aiplatform_dagster_tests.stand_ins import HashEmbedder

CONTEXT = ToolContext("thread-1", "researcher", "step-1:0")


def publish_small_corpus(storage: Path) -> str:
    documents, _ = load_documents(write_corpus(storage.parent / "corpus", SMALL_CORPUS))
    summary = ingest(IndexRepository(storage / "ingestion"), documents, HashEmbedder())
    return summary.release.release_id


class CountingFactory:
    """The platform's engine factory with the stand-in embedder, counting the builds."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, settings: Settings) -> QueryEngine:
        self.builds += 1
        return build_query_engine(settings, embedder=HashEmbedder(), registry_models=False)


def runner_over(storage: Path, factory: CountingFactory | None = None) -> ToolRunner:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)})
    return ToolRunner(ToolRegistry([search_knowledge_base_tool(settings, factory)]))


def test_passages_come_back_as_sources_to_cite(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    release_id = publish_small_corpus(storage)
    runner = runner_over(storage, CountingFactory())

    outcome = runner.call(
        "search_knowledge_base",
        {"query": "when does a page escalate to the secondary", "k": 2},
        CONTEXT,
    )

    assert outcome.status is ToolStatus.OK, outcome.content
    assert outcome.data == {
        "release_id": release_id,
        "query": "when does a page escalate to the secondary",
        "passages": 2,
    }
    assert len(outcome.sources) == 2
    best = outcome.sources[0]
    assert best["doc_id"] == "runbooks/paging.md" and best["title"] == "Paging policy"
    assert best["source"].endswith("runbooks/paging.md")
    assert "escalates to the secondary" in best["text"] and isinstance(best["score"], float)
    assert set(best) == {"chunk_id", "doc_id", "title", "source", "text", "score"}
    assert f"[{best['chunk_id']}] Paging policy: {best['text']}" in outcome.content
    assert f"release {release_id}" in outcome.content.splitlines()[0]


def test_the_engine_is_built_once_per_registry(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    publish_small_corpus(storage)
    factory = CountingFactory()
    runner = runner_over(storage, factory)

    for query in ("paging policy", "BM25 keyword search", "AIP-4031"):
        assert (
            runner.call("search_knowledge_base", {"query": query}, CONTEXT).status is ToolStatus.OK
        )

    assert factory.builds == 1


def test_before_any_ingestion_the_tool_says_to_run_it_and_works_once_it_ran(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "storage"
    factory = CountingFactory()
    runner = runner_over(storage, factory)

    empty = runner.call("search_knowledge_base", {"query": "paging"}, CONTEXT)
    assert empty.status is ToolStatus.FAILED and empty.attempts == 1
    assert "no index release yet: materialise the ingestion group (`make ingest`" in empty.content
    assert factory.builds == 0

    publish_small_corpus(storage)
    after = runner.call("search_knowledge_base", {"query": "paging"}, CONTEXT)
    assert after.status is ToolStatus.OK and after.sources and factory.builds == 1


def test_the_default_engine_refuses_the_same_way_without_loading_a_model(tmp_path: Path) -> None:
    storage = tmp_path / "storage"

    outcome = runner_over(storage).call("search_knowledge_base", {"query": "paging"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED and "`make ingest`" in outcome.content
    assert IndexRepository(storage / "ingestion").pointer(CURRENT) is None


def test_bad_queries_are_refused_before_searching(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    publish_small_corpus(storage)
    runner = runner_over(storage, CountingFactory())

    blank = runner.call("search_knowledge_base", {"query": "   "}, CONTEXT)
    too_many = runner.call("search_knowledge_base", {"query": "paging", "k": 50}, CONTEXT)

    assert blank.status is too_many.status is ToolStatus.INVALID_INPUT
    assert "The query is empty" in blank.content
    assert "k: Input should be less than or equal to 10" in too_many.content
