"""A real query engine over a stand-in release: the query path runs, the model does not."""

from pathlib import Path

import pytest

from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.retriever import Retriever
from aiplatform_dagster_tests.stand_ins import HashEmbedder, build_release, texts


@pytest.fixture
def engine(tmp_path: Path) -> QueryEngine:
    release = build_release(IndexRepository(tmp_path / "ingestion"), texts(12))
    embedder = HashEmbedder()
    return QueryEngine(Retriever.from_release(release, embedder), embedder.count_tokens)
