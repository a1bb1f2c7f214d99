"""``search_knowledge_base``: the RAG retrieval path as a tool, with passages to cite.

It runs what a user's question runs (route, hybrid search, exact terms first, reranking when a
reranker is configured) over the index release ``current`` names, and returns the passages,
not an answer: the agent writes the answer and cites each passage as ``[chunk_id]``, which
the workflow checks against the passages the tool really returned.

The query engine is built on the first call and then shared by every call of the registry
(loading the embedding model is the slow part). It stays on the release it was built on;
a new registry (a new run) reads the release ``current`` names then.
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolError,
    ToolInputError,
    ToolOutcome,
    ToolSpec,
    ToolStatus,
)
from aiplatform_dagster.config import Settings

if TYPE_CHECKING:
    from aiplatform_dagster.rag.query.engine import QueryEngine

NAME = "search_knowledge_base"
PERMISSION = "knowledge:read"
MAX_K = 10

QueryEngineFactory = Callable[[Settings], "QueryEngine"]


class SearchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(
        min_length=1, max_length=2_000, description="What to look up, in natural language."
    )
    k: int = Field(default=3, ge=1, le=MAX_K, description="How many passages to return.")


class LazyEngine:
    """The query engine, built once on first use by ``factory`` (thread-safe). A build that
    fails is not remembered, so the tool works as soon as an index release exists."""

    def __init__(self, settings: Settings, factory: QueryEngineFactory | None = None) -> None:
        self._settings = settings
        self._factory = factory
        self._engine: QueryEngine | None = None
        self._lock = threading.Lock()

    def get(self) -> "QueryEngine":
        with self._lock:
            if self._engine is None:
                self._engine = self._build()
            return self._engine

    def _build(self) -> "QueryEngine":
        from aiplatform_dagster.rag.factory import build_query_engine, open_repository
        from aiplatform_dagster.rag.index.releases import CURRENT, ReleaseError

        if open_repository(self._settings).pointer(CURRENT) is None:
            raise ToolError(
                "the knowledge base has no index release yet: materialise the ingestion group "
                "(`make ingest`, or in the Dagster UI) and call search_knowledge_base again"
            )
        try:
            return (self._factory or build_query_engine)(self._settings)
        except ReleaseError as error:
            raise ToolError(f"the knowledge base could not be opened: {error}") from None


def search(engine: "QueryEngine", query: str, k: int) -> ToolOutcome:
    """The ``k`` best passages for ``query`` as sources, and a text that shows how to cite them."""
    from aiplatform_dagster.rag.query.preprocess import QueryError

    try:
        ranked = engine.rank(query, k)
    except QueryError as error:
        raise ToolInputError(str(error)) from None
    release = engine.retriever.release_id
    sources = tuple(
        {
            "chunk_id": item.chunk.chunk_id,
            "doc_id": item.chunk.doc_id,
            "title": item.chunk.title,
            "source": item.chunk.source_path,
            "text": item.chunk.text,
            "score": float(item.score),
        }
        for item in ranked
    )
    if not sources:
        content = f"No passage in the knowledge base (release {release}) matches {query!r}."
    else:
        passages = "\n\n".join(
            f"[{source['chunk_id']}] {source['title']}: {source['text']}" for source in sources
        )
        content = (
            f"{len(sources)} passages from the knowledge base (release {release}); cite each "
            f"claim with the passage id in brackets, e.g. [{sources[0]['chunk_id']}].\n\n{passages}"
        )
    data: dict[str, Any] = {"release_id": release, "query": query, "passages": len(sources)}
    return ToolOutcome(NAME, ToolStatus.OK, content, data=data, sources=sources)


def search_knowledge_base_tool(
    settings: Settings, engine_factory: QueryEngineFactory | None = None
) -> ToolSpec:
    """The tool over the engine ``engine_factory(settings)`` builds (default: the platform's
    ``build_query_engine``), built on the first call."""
    engine = LazyEngine(settings, engine_factory)

    def run(arguments: SearchInput, context: ToolContext) -> ToolOutcome:
        return search(engine.get(), arguments.query, arguments.k)

    return ToolSpec(
        name=NAME,
        description="Search the platform's knowledge base (the indexed documents) and get the "
        "best-matching passages with their ids, to answer from and cite as [passage id].",
        permission=PERMISSION,
        input_model=SearchInput,
        run=run,
        timeout_s=60.0,  # the first call loads the embedding model (and the reranker, if any)
        max_retries=1,
    )
