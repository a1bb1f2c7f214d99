"""Shared fixtures: the real embedding model, throwaway corpora and an isolated platform."""

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.retriever import Retriever
from aiplatform_dagster_tests.cross_encoder import cross_encoder_dir  # noqa: F401 (fixture)
from aiplatform_dagster_tests.mlflow_server import mlflow_server  # noqa: F401 (fixture)
from aiplatform_dagster_tests.onnx_models import (  # noqa: F401 (fixtures)
    broken_int8_cache,
    float_onnx_cache,
    int8_cache,
)
from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN  # noqa: F401 (used by tests)

REDIS_URL = os.environ.get("AIPLATFORM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The real Redis the tests use; each test keeps to its own key prefix and deletes it."""


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards."""
    prefix = f"aiplatform-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL)
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    assert not list(client.scan_iter(match=f"{prefix}*"))


SMALL_CORPUS = {
    "runbooks/paging.md": (
        "# Paging policy\n\nThe primary on-call engineer is paged first. If nobody "
        "acknowledges within 15 minutes the page escalates to the secondary.\n\n"
        "Incidents with customer impact are declared SEV-1 and need a status page update."
    ),
    "guides/embeddings.txt": (
        "Embedding models\n\nChunks are embedded with all-MiniLM-L6-v2 into 384-dimensional "
        "vectors. Vectors are normalised to unit length so cosine similarity is a dot product."
    ),
    "guides/bm25.html": (
        "<html><head><title>Keyword search</title><style>p {color: red}</style></head>"
        "<body><h1>Keyword search</h1><p>BM25 ranks chunks by term frequency and inverse "
        "document frequency.</p><script>alert('x')</script><p>Error code AIP-4031 is matched "
        "exactly.</p></body></html>"
    ),
}


def write_corpus(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> text or bytes) under ``folder``."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus", SMALL_CORPUS)


@pytest.fixture
def platform_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """Point the platform at a documents folder and a fresh storage folder; return storage."""

    def configure(documents: Path) -> Path:
        storage = tmp_path / "storage"
        monkeypatch.setenv("AIPLATFORM_DOCUMENTS_DIR", str(documents))
        monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(storage))
        return storage

    return configure


@pytest.fixture(scope="session")
def sample_repository(tmp_path_factory: pytest.TempPathFactory, embedder) -> IndexRepository:
    """The shipped sample corpus, ingested once per session into a current release.

    Its root is ``<storage>/ingestion``, the layout the platform uses under its storage folder.
    """
    repository = IndexRepository(tmp_path_factory.mktemp("sample") / "ingestion")
    documents, skipped = load_documents(SAMPLE_CORPUS_DIR)
    assert not skipped
    ingest(repository, documents, embedder)
    return repository


@pytest.fixture
def sample_retriever(sample_repository: IndexRepository, embedder) -> Retriever:
    return Retriever.from_release(sample_repository.open_pointer(), embedder)
