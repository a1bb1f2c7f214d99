"""One contract for every VectorStore backend, so configuration can swap them safely.

The Weaviate cases need a real server named by WEAVIATE_URL (plus WEAVIATE_API_KEY and
WEAVIATE_GRPC_PORT where it needs them); without one they are skipped, never passed.
"""

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest

from aiplatform_dagster.rag.index.vector_store import EmbeddedVectorIndex, SyncStats, VectorStore
from aiplatform_dagster.rag.index.weaviate_store import WeaviateEndpoint, WeaviateVectorStore
from aiplatform_dagster_tests.rag.index.test_vector_store import brute_force, ids_for, unit_rows

DIM = 32
COUNT = 300
K = 10


@pytest.fixture(params=["embedded", "weaviate"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "embedded":
        yield EmbeddedVectorIndex(tmp_path / "index")
        return
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip("WEAVIATE_URL not set: no Weaviate server on this machine")
    yield from _weaviate_store(url)


def _weaviate_store(url: str) -> Iterator[WeaviateVectorStore]:
    """A store on a fresh collection, deleted afterwards, so runs never see each other's data."""
    import weaviate
    from weaviate.classes.init import Auth

    grpc_port = (
        int(os.environ["WEAVIATE_GRPC_PORT"]) if "WEAVIATE_GRPC_PORT" in os.environ else None
    )
    api_key = os.environ.get("WEAVIATE_API_KEY")
    client = weaviate.connect_to_custom(
        **asdict(WeaviateEndpoint.from_url(url, grpc_port)),
        auth_credentials=Auth.api_key(api_key) if api_key else None,
    )
    name = f"ContractTest{uuid4().hex}"
    store = WeaviateVectorStore(url, name, grpc_port=grpc_port, client_factory=lambda: client)
    try:
        yield store
    finally:
        client.collections.delete(name)
        store.close()
        client.close()


def corpus(n: int = COUNT, seed: int = 0) -> tuple[list[str], np.ndarray]:
    return ids_for(n), unit_rows(n, DIM, seed)


def assert_brute_force(store: VectorStore, ids: list[str], vectors: np.ndarray) -> None:
    """search and search_batch both return numpy's exact top-k, ids and cosine scores."""
    queries = unit_rows(20, DIM, seed=99)
    for query, batch_hits in zip(queries, store.search_batch(queries, K), strict=True):
        expected = brute_force(ids, vectors, query, K)
        for hits in (batch_hits, store.search(query, K)):
            assert [h.chunk_id for h in hits] == [h.chunk_id for h in expected]
            np.testing.assert_allclose(
                [h.score for h in hits], [h.score for h in expected], atol=1e-4
            )


def test_empty_store(store: VectorStore) -> None:
    assert store.count() == 0
    assert store.dimension is None
    assert store.search(unit_rows(1, DIM)[0], K) == []


def test_sync_then_search_matches_brute_force(store: VectorStore) -> None:
    ids, vectors = corpus()
    assert store.sync(ids, vectors) == SyncStats(
        added=COUNT, updated=0, removed=0, unchanged=0, total=COUNT
    )
    assert store.count() == COUNT
    assert store.dimension == DIM
    assert_brute_force(store, ids, vectors)


def test_resync_counts_and_reflects_changes(store: VectorStore) -> None:
    ids, vectors = corpus()
    store.sync(ids, vectors)
    assert store.sync(ids, vectors) == SyncStats(0, 0, 0, COUNT, COUNT)

    new_ids = [*ids[1:], "added"]  # c0 removed
    new_vectors = np.vstack([vectors[1:], unit_rows(1, DIM, seed=7)])
    new_vectors[0] = unit_rows(1, DIM, seed=8)[0]  # c1 updated
    stats = store.sync(new_ids, new_vectors)

    assert stats == SyncStats(added=1, updated=1, removed=1, unchanged=COUNT - 2, total=COUNT)
    assert store.count() == COUNT
    assert store.search(new_vectors[0], 1)[0].chunk_id == "c1"
    assert store.search(new_vectors[-1], 1)[0].chunk_id == "added"
    assert "c0" not in {hit.chunk_id for hit in store.search(vectors[0], COUNT)}
    assert_brute_force(store, new_ids, new_vectors)


def test_nan_vector_is_rejected_and_stored_data_unchanged(store: VectorStore) -> None:
    ids, vectors = corpus()
    store.sync(ids, vectors)
    bad = unit_rows(COUNT, DIM, seed=1)
    bad[5, 3] = np.nan

    with pytest.raises(ValueError, match="NaN"):
        store.sync(ids, bad)

    assert store.count() == COUNT
    assert_brute_force(store, ids, vectors)


def test_query_of_another_dimension_is_rejected(store: VectorStore) -> None:
    ids, vectors = corpus(20)
    store.sync(ids, vectors)
    with pytest.raises(ValueError, match="dim 32"):
        store.search(unit_rows(1, DIM + 1)[0], K)
