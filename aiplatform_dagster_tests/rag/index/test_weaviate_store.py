"""The Weaviate backend's behaviour that needs no server: URLs, errors, configuration, imports.

Sync and search logic runs against ``FakeClient``, an in-memory stand-in that checks every call
against the installed weaviate-client's real method signatures and returns its real result
classes. It cannot show what a server does; test_vector_store_contract.py does, given one.
"""

import inspect
import subprocess
import sys
import time
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from weaviate.collections.aggregations.over_all.sync import _OverAll
from weaviate.collections.classes.aggregate import AggregateReturn
from weaviate.collections.classes.batch import BatchObjectReturn, DeleteManyReturn, ErrorObject
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.classes.internal import MetadataReturn, Object, QueryReturn
from weaviate.collections.collection.sync import Collection
from weaviate.collections.collections.sync import _Collections
from weaviate.collections.data.sync import _DataCollection
from weaviate.collections.queries.fetch_objects.query.sync import _FetchObjectsQuery
from weaviate.collections.queries.near_vector.query.sync import _NearVectorQuery
from weaviate.exceptions import WeaviateInsertManyAllFailedError
from weaviate.util import generate_uuid5

from aiplatform_dagster.defs.resources import StorageResource, VectorStoreResource
from aiplatform_dagster.rag.index.vector_store import SyncStats
from aiplatform_dagster.rag.index.weaviate_store import WeaviateEndpoint, WeaviateVectorStore
from aiplatform_dagster_tests.rag.index.test_vector_store import brute_force, ids_for, unit_rows

DIM = 8


@pytest.mark.parametrize(
    ("url", "grpc_port", "expected"),
    [
        ("http://localhost:8080", None, ("localhost", 8080, False, 50051)),
        ("http://weaviate", None, ("weaviate", 80, False, 50051)),
        ("https://vectors.example.com", None, ("vectors.example.com", 443, True, 50051)),
        ("https://vectors.example.com:8443/", 6443, ("vectors.example.com", 8443, True, 6443)),
    ],
)
def test_endpoint_from_url(url: str, grpc_port: int | None, expected: tuple) -> None:
    host, http_port, secure, grpc = expected
    assert WeaviateEndpoint.from_url(url, grpc_port) == WeaviateEndpoint(
        http_host=host,
        http_port=http_port,
        http_secure=secure,
        grpc_host=host,
        grpc_port=grpc,
        grpc_secure=secure,
    )


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://weaviate", "http://", ""])
def test_bad_url_fails_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="Weaviate URL must look like"):
        WeaviateVectorStore(url)


def test_unreachable_server_names_the_url_and_the_fix() -> None:
    store = WeaviateVectorStore("http://127.0.0.1:1")  # nothing listens on port 1
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"http://127\.0\.0\.1:1") as error:
        store.count()
    assert time.monotonic() - started < 10
    assert "AIPLATFORM_WEAVIATE_URL" in str(error.value)
    assert "AIPLATFORM_VECTOR_BACKEND=embedded" in str(error.value)


def test_weaviate_backend_without_url_is_a_clear_error(tmp_path) -> None:
    resource = VectorStoreResource(
        backend="weaviate", storage=StorageResource(root_dir=str(tmp_path))
    )
    with pytest.raises(ValueError, match="AIPLATFORM_WEAVIATE_URL"):
        resource.get_store()


def test_weaviate_backend_builds_the_store_without_connecting(tmp_path) -> None:
    resource = VectorStoreResource(
        backend="weaviate",
        storage=StorageResource(root_dir=str(tmp_path)),
        weaviate_url="http://127.0.0.1:1",
        weaviate_collection="Elsewhere",
    )
    store = resource.get_store()
    assert isinstance(store, WeaviateVectorStore)
    assert (store.url, store.collection) == ("http://127.0.0.1:1", "Elsewhere")


def test_default_resources_read_the_backend_from_the_environment(monkeypatch) -> None:
    from aiplatform_dagster.defs.resources import default_resources

    monkeypatch.setenv("AIPLATFORM_VECTOR_BACKEND", "weaviate")
    monkeypatch.setenv("AIPLATFORM_WEAVIATE_URL", "http://weaviate:8080")
    monkeypatch.setenv("AIPLATFORM_WEAVIATE_COLLECTION", "Staging")
    monkeypatch.delenv("WEAVIATE_API_KEY", raising=False)
    resource = default_resources()["vector_store"]
    assert (resource.backend, resource.weaviate_url) == ("weaviate", "http://weaviate:8080")
    assert (resource.weaviate_collection, resource.weaviate_api_key) == ("Staging", None)


def test_importing_the_module_does_not_import_weaviate() -> None:
    code = (
        "import sys, aiplatform_dagster.rag.index.weaviate_store; "
        "sys.exit(any(m == 'weaviate' or m.startswith('weaviate.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _checked(real: type, method: str, *args: Any, **kwargs: Any) -> None:
    """Fail like the real client would on an argument its installed version does not take."""
    inspect.signature(getattr(real, method)).bind(None, *args, **kwargs)


class FakeCollection:
    """One collection: uuid -> (chunk id, vector), answering the calls the store makes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, tuple[str, list[float]]] = {}
        self.inserted: list[str] = []
        self.deleted: list[str] = []
        self.reject: set[str] = set()
        self.data = self.query = self.aggregate = self

    def iterator(self, *args: Any, **kwargs: Any) -> Any:
        _checked(Collection, "iterator", *args, **kwargs)
        for uuid, (chunk_id, vector) in sorted(self.objects.items()):
            yield self._object(uuid, chunk_id, {"default": vector}, MetadataReturn())

    def insert_many(self, objects: list) -> BatchObjectReturn:
        _checked(_DataCollection, "insert_many", objects)
        result = BatchObjectReturn()
        for index, obj in enumerate(objects):
            chunk_id = obj.properties["chunk_id"]
            if chunk_id in self.reject:
                result.errors[index] = ErrorObject(f"rejected {chunk_id}", obj)
            else:
                self.objects[str(obj.uuid)] = (chunk_id, obj.vector["default"])
                self.inserted.append(chunk_id)
        if len(result.errors) == len(objects):
            raise WeaviateInsertManyAllFailedError("every object was rejected")
        result.has_errors = bool(result.errors)
        return result

    def delete_many(self, *args: Any, **kwargs: Any) -> DeleteManyReturn:
        _checked(_DataCollection, "delete_many", *args, **kwargs)
        uuids = [str(uuid) for uuid in kwargs["where"].value]
        self.deleted.extend(self.objects.pop(uuid)[0] for uuid in uuids if uuid in self.objects)
        return DeleteManyReturn(failed=0, matches=len(uuids), objects=None, successful=len(uuids))

    def near_vector(self, *args: Any, **kwargs: Any) -> QueryReturn:
        _checked(_NearVectorQuery, "near_vector", *args, **kwargs)
        assert kwargs["target_vector"] == "default" and kwargs["return_metadata"].distance
        query = np.asarray(kwargs["near_vector"])
        scored = []
        for uuid, (chunk_id, vector) in self.objects.items():
            v = np.asarray(vector)
            cosine = float(v @ query / np.linalg.norm(v) / np.linalg.norm(query))
            scored.append((1 - cosine, uuid, chunk_id))
        return QueryReturn(
            objects=[
                self._object(uuid, chunk_id, {}, MetadataReturn(distance=distance))
                for distance, uuid, chunk_id in sorted(scored)[: kwargs["limit"]]
            ]
        )

    def fetch_objects(self, *args: Any, **kwargs: Any) -> QueryReturn:
        _checked(_FetchObjectsQuery, "fetch_objects", *args, **kwargs)
        first = sorted(self.objects.items())[: kwargs["limit"]]
        return QueryReturn(
            objects=[self._object(u, c, {"default": v}, MetadataReturn()) for u, (c, v) in first]
        )

    def over_all(self, *args: Any, **kwargs: Any) -> AggregateReturn:
        _checked(_OverAll, "over_all", *args, **kwargs)
        return AggregateReturn(properties={}, total_count=len(self.objects))

    def _object(self, uuid: str, chunk_id: str, vector: dict, metadata: MetadataReturn) -> Object:
        return Object(
            uuid=UUID(uuid),
            metadata=metadata,
            properties={"chunk_id": chunk_id},
            references=None,
            vector=vector,
            collection=self.name,
        )


class FakeClient:
    """Stands in for a connected ``WeaviateClient``: its ``collections`` namespace and close."""

    def __init__(self) -> None:
        self.store: dict[str, FakeCollection] = {}
        self.created: list[dict] = []
        self.closed = False
        self.collections = self

    def exists(self, name: str) -> bool:
        return name in self.store

    def create(self, *args: Any, **kwargs: Any) -> FakeCollection:
        _checked(_Collections, "create", *args, **kwargs)
        self.created.append(_CollectionConfigCreate(name=args[0], **kwargs)._to_dict())
        self.store[args[0]] = FakeCollection(args[0])
        return self.store[args[0]]

    def get(self, name: str) -> FakeCollection:
        return self.store[name]

    def delete(self, name: str) -> None:
        del self.store[name]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def fake_store(fake: FakeClient, batch_size: int = 4) -> WeaviateVectorStore:
    return WeaviateVectorStore(
        "http://weaviate:8080", "Chunks", batch_size=batch_size, client_factory=lambda: fake
    )


def test_first_sync_creates_a_cosine_collection_with_a_self_provided_vector(fake) -> None:
    store = fake_store(fake)
    assert store.sync(ids_for(10), unit_rows(10, DIM)) == SyncStats(10, 0, 0, 0, 10)
    config = fake.created[0]
    assert config["class"] == "Chunks"
    assert config["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
    assert config["vectorConfig"]["default"]["vectorIndexConfig"]["distance"] == "cosine"
    assert [p["name"] for p in config["properties"]] == ["chunk_id"]
    assert set(fake.store["Chunks"].objects) == {generate_uuid5(i) for i in ids_for(10)}
    assert (store.count(), store.dimension) == (10, DIM)


def test_resync_writes_only_changes_and_deletes_removed_by_uuid(fake) -> None:
    store = fake_store(fake)
    ids, vectors = ids_for(10), unit_rows(10, DIM)
    store.sync(ids, vectors)
    collection = fake.store["Chunks"]
    collection.inserted.clear()
    assert store.sync(ids, vectors) == SyncStats(0, 0, 0, 10, 10)
    assert collection.inserted == []

    new_ids = [*ids[1:], "added"]
    new_vectors = np.vstack([vectors[1:], unit_rows(1, DIM, seed=5)])
    new_vectors[0] = unit_rows(1, DIM, seed=6)[0]
    assert store.sync(new_ids, new_vectors) == SyncStats(1, 1, 1, 8, 10)
    assert sorted(collection.inserted) == ["added", "c1"]
    assert collection.deleted == ["c0"]


def test_search_scores_are_cosine_best_first(fake) -> None:
    store = fake_store(fake)
    ids, vectors = ids_for(50), unit_rows(50, DIM)
    store.sync(ids, vectors)
    for query in unit_rows(5, DIM, seed=3):
        hits, expected = store.search(query * 3.0, 5), brute_force(ids, vectors, query, 5)
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in expected]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], atol=1e-6)
    with pytest.raises(ValueError, match=f"has dim {DIM}, query has {DIM + 1}"):
        store.search(unit_rows(1, DIM + 1)[0], 5)


def test_rejected_objects_fail_the_sync_with_count_and_first_message(fake) -> None:
    store = fake_store(fake)
    store.sync(ids_for(6), unit_rows(6, DIM))
    fake.store["Chunks"].reject = {"new1", "new2"}
    ids = [*ids_for(5), "new1", "new2", "new3"]  # c5 would be removed after the writes
    with pytest.raises(RuntimeError, match=r"rejected 2 of 3 objects.*first error: rejected new1"):
        store.sync(ids, unit_rows(8, DIM))
    assert fake.store["Chunks"].deleted == []


def test_a_batch_where_every_object_fails_is_reported_too(fake) -> None:
    store = fake_store(fake)
    store.sync(ids_for(2), unit_rows(2, DIM))
    fake.store["Chunks"].reject = {"c0", "c1"}
    with pytest.raises(RuntimeError, match=r"rejected 2 of 2 objects.*every object was rejected"):
        store.sync(ids_for(2), unit_rows(2, DIM, seed=9))


def test_new_dimension_rebuilds_the_collection(fake) -> None:
    store = fake_store(fake)
    store.sync(ids_for(5), unit_rows(5, DIM))
    assert store.sync(ids_for(5), unit_rows(5, DIM * 2)) == SyncStats(0, 5, 0, 0, 5)
    assert len(fake.created) == 2
    assert (store.count(), store.dimension) == (5, DIM * 2)


def test_close_closes_the_client_once(fake) -> None:
    with fake_store(fake) as store:
        assert store.count() == 0
    assert fake.closed
