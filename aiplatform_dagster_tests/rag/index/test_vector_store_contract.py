"""One contract for every vector backend: publish a release, search it, switch, roll back, retain.

Releases are built with the real build steps of ``rag/index/build.py`` into a real repository,
over a few documents embedded by ``HashEmbedder`` (it stands in for a model, not for anything
under test), and published through the backend with ``publish_release``.

Backends:
- ``embedded``: the default backend, in the release's own segments.
- ``weaviate-stand-in``: ``WeaviateBackend`` against ``WeaviateServerStandIn``
  (test_weaviate_store.py), which stands in only for the server; it shows the backend's calls
  fit the installed client and follow the protocol, not what a real server does.
- ``weaviate-server``: ``WeaviateBackend`` against the real server named by WEAVIATE_URL (plus
  WEAVIATE_API_KEY and WEAVIATE_GRPC_PORT where it needs them); skipped without one, never passed.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest

from aiplatform_dagster.rag.index.build import (
    publish_release,
)
from aiplatform_dagster.rag.index.releases import CURRENT, IndexRepository, Release, Retention
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend, VectorBackend
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster_tests.rag.index.test_vector_store import assert_same_hits, brute_force
from aiplatform_dagster_tests.stand_ins import DIM, build_release, text_vector, texts

KEEP_ALL = Retention(keep=100, keep_days=365)


def publish(
    repository: IndexRepository,
    backend: VectorBackend,
    corpus: dict[str, str],
    retention: Retention = KEEP_ALL,
) -> Release:
    release = build_release(repository, corpus)
    backend.prepare(release)
    publish_release(repository, release, backend, retention)
    return release


def query_for(corpus: dict[str, str], doc_id: str) -> np.ndarray:
    """The vector of the document's only chunk: its best hit, at cosine 1."""
    chunk = Chunk(f"{doc_id}#0", doc_id, doc_id.title(), "", 0, 0, 0, 0, corpus[doc_id])
    return text_vector(chunk.indexed_text)


def top_chunk(backend: VectorBackend, release: Release, query: np.ndarray) -> str:
    return backend.open(release).search(query, 1)[0].chunk_id


@dataclass
class BackendUnderTest:
    """A backend and, for a server backend, what its server holds."""

    backend: VectorBackend
    served_releases: Callable[[], set[str]] | None = None
    """Release ids with a collection on the server (None: the embedded backend has no server)."""
    alias_release: Callable[[str], str | None] | None = None
    """The release id a pointer's alias names on the server."""


@pytest.fixture(params=["embedded", "weaviate-stand-in", "weaviate-server"])
def under_test(request: pytest.FixtureRequest) -> Iterator[BackendUnderTest]:
    if request.param == "embedded":
        yield BackendUnderTest(EmbeddedBackend())
        return
    if request.param == "weaviate-stand-in":
        from aiplatform_dagster_tests.rag.index.test_weaviate_store import WeaviateServerStandIn

        yield from weaviate_under_test(WeaviateServerStandIn(), "http://stand-in:8080")
        return
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip("WEAVIATE_URL not set: no Weaviate server on this machine")
    yield from weaviate_under_test(None, url)


def weaviate_under_test(client: object | None, url: str) -> Iterator[BackendUnderTest]:
    """A backend under a fresh prefix; every collection and alias it made is deleted after."""
    from aiplatform_dagster.rag.index.weaviate_store import WeaviateBackend

    grpc_port = os.environ.get("WEAVIATE_GRPC_PORT")
    backend = WeaviateBackend(
        url,
        os.environ.get("WEAVIATE_API_KEY"),
        prefix=f"Contract{uuid4().hex[:12]}",
        grpc_port=int(grpc_port) if grpc_port else None,
        timeout_s=20,
        client_factory=(lambda: client) if client is not None else None,
    )
    server = backend._connected()

    def served_releases() -> set[str]:
        names = server.collections.list_all(simple=True)
        return {name for name in names if name.startswith(f"{backend.prefix}_")}

    def alias_release(pointer: str) -> str | None:
        return backend.alias_target(pointer)

    try:
        yield BackendUnderTest(backend, served_releases, alias_release)
    finally:
        for alias in server.alias.list_all():
            if alias.startswith(f"{backend.prefix}_"):
                server.alias.delete(alias_name=alias)
        for name in served_releases():
            server.collections.delete(name)
        backend.close()


def collection_of(under_test: BackendUnderTest, release: Release) -> str:
    return under_test.backend.collection_name(release.release_id)  # type: ignore[attr-defined]


@pytest.fixture
def repository(tmp_path: Path) -> IndexRepository:
    return IndexRepository(tmp_path / "releases")


def test_published_release_matches_brute_force(under_test, repository) -> None:
    backend = under_test.backend
    corpus = texts(40)
    release = publish(repository, backend, corpus)
    assert repository.pointer(CURRENT) == release.release_id
    store = backend.open(repository.open_pointer(CURRENT))
    assert (store.count(), store.dimension) == (40, DIM)
    (ids, vectors), *_ = list(release.live_vectors())
    queries = np.random.default_rng(5).standard_normal((8, DIM)).astype(np.float32)
    for query, hits in zip(queries, store.search_batch(queries, 10), strict=True):
        expected = brute_force(ids, vectors, query, 10)
        assert_same_hits(hits, expected)
        assert_same_hits(store.search(query * 3.0, 10), expected)
    best = store.search(query_for(corpus, "doc-7"), 1)[0]
    assert best.chunk_id == "doc-7#0" and best.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=f"has dim {DIM}, query has {DIM + 1}"):
        store.search(np.ones(DIM + 1, np.float32), 3)


def test_switch_then_roll_back(under_test, repository) -> None:
    backend = under_test.backend
    first = texts(20)
    second = {**texts(20), "doc-0": "document 0 was rewritten", "doc-new": "a new document"}
    del second["doc-1"]
    old = publish(repository, backend, first)
    reader_of_old = backend.open(old)

    new = publish(repository, backend, second)
    assert repository.pointer(CURRENT) == new.release_id
    current = backend.open(repository.open_pointer(CURRENT))
    assert current.search(query_for(second, "doc-new"), 1)[0].chunk_id == "doc-new#0"
    assert current.search(query_for(second, "doc-0"), 1)[0].chunk_id == "doc-0#0"
    assert "doc-1#0" not in {hit.chunk_id for hit in current.search(query_for(first, "doc-1"), 25)}
    # A reader keeps the release it opened.
    assert "doc-new#0" not in {hit.chunk_id for hit in reader_of_old.search(np.ones(DIM), 25)}
    assert reader_of_old.search(query_for(first, "doc-1"), 1)[0].chunk_id == "doc-1#0"
    assert_alias(under_test, CURRENT, new)

    repository.move_pointer(old.release_id, expected=new.release_id)
    backend.point(CURRENT, old.release_id)
    rolled_back = backend.open(repository.open_pointer(CURRENT))
    assert rolled_back.search(query_for(first, "doc-1"), 1)[0].chunk_id == "doc-1#0"
    assert "doc-new#0" not in {hit.chunk_id for hit in rolled_back.search(np.ones(DIM), 25)}
    assert_alias(under_test, CURRENT, old)


def assert_alias(under_test: BackendUnderTest, pointer: str, release: Release) -> None:
    """A server's alias names the release, and searches through the alias reach it."""
    if under_test.alias_release is None:
        return
    from aiplatform_dagster.rag.index.weaviate_store import WeaviateReleaseVectors

    backend = under_test.backend
    assert under_test.alias_release(pointer) == collection_of(under_test, release)
    through_alias = WeaviateReleaseVectors(
        backend,  # type: ignore[arg-type]
        backend.alias_name(pointer),  # type: ignore[attr-defined]
        release.release_id,
        DIM,
    )
    query = np.random.default_rng(9).standard_normal(DIM)
    assert through_alias.search(query, 5) == backend.open(release).search(query, 5)


def test_retention_drops_old_releases_but_never_a_pointed_one(under_test, repository) -> None:
    backend = under_test.backend
    keep_one = Retention(keep=1, keep_days=0)
    pinned = publish(repository, backend, texts(5, "v1"), keep_one)
    repository.move_pointer(pinned.release_id, expected=None, name="candidate")
    backend.point("candidate", pinned.release_id)
    dropped = publish(repository, backend, texts(5, "v2"), keep_one)
    kept = publish(repository, backend, texts(5, "v3"), keep_one)

    assert repository.release_ids() == sorted([pinned.release_id, kept.release_id])
    assert dropped.release_id not in repository.release_ids()
    if under_test.served_releases is not None:
        assert under_test.served_releases() == {
            collection_of(under_test, pinned),
            collection_of(under_test, kept),
        }
        assert_alias(under_test, "candidate", pinned)
    assert top_chunk(backend, pinned, query_for(texts(5, "v1"), "doc-3")) == "doc-3#0"


def test_empty_release_searches_to_nothing(under_test, repository) -> None:
    store = under_test.backend.open(publish(repository, under_test.backend, {}))
    assert (store.count(), store.dimension) == (0, None)
    assert store.search(np.ones(DIM, np.float32), 5) == []
    assert store.search_batch(np.ones((2, DIM), np.float32), 5) == [[], []]
