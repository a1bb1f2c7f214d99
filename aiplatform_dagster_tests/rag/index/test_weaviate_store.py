"""The Weaviate backend's behaviour that needs no server: names, errors, uploads, aliases.

``WeaviateServerStandIn`` stands in only for the server: it checks every call against the
installed weaviate-client's real method signatures and answers with the client's real result
classes. It cannot show what a server does; test_vector_store_contract.py runs the same
release, switch and rollback contract against a real server when WEAVIATE_URL names one.
"""

import inspect
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from weaviate.aliases.alias import AliasReturn
from weaviate.aliases.sync import _Alias
from weaviate.client import WeaviateClient
from weaviate.collections.aggregations.over_all.sync import _OverAll
from weaviate.collections.classes.aggregate import AggregateReturn
from weaviate.collections.classes.batch import BatchObjectReturn, ErrorObject
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.classes.internal import MetadataReturn, Object, QueryReturn
from weaviate.collections.collections.sync import _Collections
from weaviate.collections.data.sync import _DataCollection
from weaviate.collections.queries.near_vector.query.sync import _NearVectorQuery
from weaviate.exceptions import (
    WeaviateInsertManyAllFailedError,
    WeaviateQueryError,
    WeaviateTimeoutError,
)
from weaviate.util import generate_uuid5

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.index.build import publish_release
from aiplatform_dagster.rag.index.releases import CURRENT, IndexRepository, Release
from aiplatform_dagster.rag.index.weaviate_store import (
    MissingCollection,
    WeaviateBackend,
    WeaviateEndpoint,
    WeaviateError,
    WeaviateSettingError,
    WeaviateUnavailable,
)
from aiplatform_dagster_tests.rag.index.test_vector_store import assert_same_hits, brute_force
from aiplatform_dagster_tests.rag.index.test_vector_store_contract import (
    DIM,
    KEEP_ALL,
    build_release,
    publish,
    texts,
)

URL = "http://weaviate:8080"


def _checked(real: type, method: str, *args: Any, **kwargs: Any) -> None:
    """Fail like the real client would on an argument its installed version does not take."""
    inspect.signature(getattr(real, method)).bind(None, *args, **kwargs)


class StandInCollection:
    """What ``client.collections.get(name)`` returns: requests resolve the name when made."""

    def __init__(self, server: "WeaviateServerStandIn", name: str) -> None:
        self.server = server
        self.name = name
        self.data = self.query = self.aggregate = self

    @property
    def objects(self) -> dict[str, tuple[str, list[float]]]:
        name = self.server.aliases.get(self.name, self.name)
        if name not in self.server.stored:
            raise WeaviateQueryError(f"class {self.name} not found", "GRPC")
        return self.server.stored[name]

    def insert_many(self, objects: list) -> BatchObjectReturn:
        _checked(_DataCollection, "insert_many", objects)
        self.server.requests += 1
        stored, result = self.objects, BatchObjectReturn()
        for index, obj in enumerate(objects):
            chunk_id = obj.properties["chunk_id"]
            if chunk_id in self.server.reject:
                result.errors[index] = ErrorObject(f"rejected {chunk_id}", obj)
            elif chunk_id not in self.server.lose:
                stored[str(obj.uuid)] = (chunk_id, obj.vector["default"])
                self.server.inserted.append(chunk_id)
        if objects and len(result.errors) == len(objects):
            raise WeaviateInsertManyAllFailedError("every object was rejected")
        result.has_errors = bool(result.errors)
        return result

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
                Object(
                    uuid=UUID(uuid),
                    metadata=MetadataReturn(distance=distance),
                    properties={"chunk_id": chunk_id},
                    references=None,
                    vector={},
                    collection=self.name,
                )
                for distance, uuid, chunk_id in sorted(scored)[: kwargs["limit"]]
            ]
        )

    def over_all(self, *args: Any, **kwargs: Any) -> AggregateReturn:
        _checked(_OverAll, "over_all", *args, **kwargs)
        return AggregateReturn(properties={}, total_count=len(self.objects))


class WeaviateServerStandIn:
    """Stands in for a connected ``WeaviateClient`` and its server: collections and aliases.

    ``reject`` makes the server refuse objects by chunk id; ``lose`` makes it accept them
    without storing them (a count that comes up short); ``version`` is what ``get_meta`` says.
    """

    def __init__(self, version: str = "1.32.4") -> None:
        self.version = version
        self.stored: dict[str, dict[str, tuple[str, list[float]]]] = {}
        self.aliases: dict[str, str] = {}
        self.created: list[dict] = []
        self.inserted: list[str] = []
        self.reject: set[str] = set()
        self.lose: set[str] = set()
        self.requests = 0
        self.closed = False
        self.collections = _StandInCollections(self)
        self.alias = _StandInAliases(self)

    def get_meta(self, *args: Any, **kwargs: Any) -> dict:
        _checked(WeaviateClient, "get_meta", *args, **kwargs)
        return {"version": self.version}

    def close(self) -> None:
        self.closed = True


class _StandInCollections:
    def __init__(self, server: WeaviateServerStandIn) -> None:
        self.server = server

    def exists(self, *args: Any, **kwargs: Any) -> bool:
        _checked(_Collections, "exists", *args, **kwargs)
        return args[0] in self.server.stored

    def create(self, *args: Any, **kwargs: Any) -> StandInCollection:
        _checked(_Collections, "create", *args, **kwargs)
        name = args[0]
        if name in self.server.stored or name in self.server.aliases:
            raise WeaviateQueryError(f"class name {name} already exists", "HTTP")
        self.server.created.append(_CollectionConfigCreate(name=name, **kwargs)._to_dict())
        self.server.stored[name] = {}
        return StandInCollection(self.server, name)

    def get(self, *args: Any, **kwargs: Any) -> StandInCollection:
        _checked(_Collections, "get", *args, **kwargs)
        return StandInCollection(self.server, args[0])

    def delete(self, *args: Any, **kwargs: Any) -> None:
        _checked(_Collections, "delete", *args, **kwargs)
        self.server.stored.pop(args[0], None)

    def list_all(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        _checked(_Collections, "list_all", *args, **kwargs)
        return dict.fromkeys(self.server.stored)


class _StandInAliases:
    def __init__(self, server: WeaviateServerStandIn) -> None:
        self.server = server

    def get(self, *args: Any, **kwargs: Any) -> AliasReturn | None:
        _checked(_Alias, "get", *args, **kwargs)
        target = self.server.aliases.get(kwargs["alias_name"])
        return AliasReturn(alias=kwargs["alias_name"], collection=target) if target else None

    def create(self, *args: Any, **kwargs: Any) -> None:
        _checked(_Alias, "create", *args, **kwargs)
        alias, target = kwargs["alias_name"], kwargs["target_collection"]
        if alias in self.server.aliases or target not in self.server.stored:
            raise WeaviateQueryError(f"cannot create alias {alias} for {target}", "HTTP")
        self.server.aliases[alias] = target

    def update(self, *args: Any, **kwargs: Any) -> bool:
        _checked(_Alias, "update", *args, **kwargs)
        alias, target = kwargs["alias_name"], kwargs["new_target_collection"]
        if alias not in self.server.aliases:
            return False
        assert target in self.server.stored
        self.server.aliases[alias] = target
        return True

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        _checked(_Alias, "delete", *args, **kwargs)
        return self.server.aliases.pop(kwargs["alias_name"], None) is not None

    def list_all(self, *args: Any, **kwargs: Any) -> dict[str, AliasReturn]:
        _checked(_Alias, "list_all", *args, **kwargs)
        wanted = kwargs.get("collection")
        return {
            alias: AliasReturn(alias=alias, collection=target)
            for alias, target in self.server.aliases.items()
            if wanted in (None, target)
        }


@pytest.fixture
def server() -> WeaviateServerStandIn:
    return WeaviateServerStandIn()


@pytest.fixture
def repository(tmp_path) -> IndexRepository:
    return IndexRepository(tmp_path / "releases")


def backend_on(
    server: WeaviateServerStandIn, prefix: str = "Aiplatform", batch_size: int = 4
) -> WeaviateBackend:
    return WeaviateBackend(
        URL, None, prefix=prefix, batch_size=batch_size, client_factory=lambda: server
    )


@pytest.fixture
def backend(server) -> Iterator[WeaviateBackend]:
    with backend_on(server) as backend:
        yield backend


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
    with pytest.raises(WeaviateSettingError, match=r"must look like.*AIPLATFORM_WEAVIATE_URL"):
        WeaviateBackend(url, None)


@pytest.mark.parametrize("prefix", ["", "1st", "my-env", "a b"])
def test_bad_prefix_fails_at_construction(prefix: str) -> None:
    with pytest.raises(WeaviateSettingError, match="AIPLATFORM_WEAVIATE_PREFIX"):
        WeaviateBackend(URL, None, prefix=prefix)


def test_names_are_valid_classes_scoped_by_the_prefix() -> None:
    backend = WeaviateBackend(URL, None)
    assert backend.collection_name("r20261203T101500123-1a2b3c") == (
        "Aiplatform_r20261203T101500123_1a2b3c"
    )
    assert backend.alias_name("current") == "Aiplatform_Current"
    staging = WeaviateBackend(URL, None, prefix="staging")
    assert staging.alias_name("candidate") == "Staging_Candidate"
    with pytest.raises(ValueError, match="pointer names are identifiers"):
        backend.alias_name("not a name")


def test_unreachable_server_names_the_url_and_the_fix(repository) -> None:
    release = build_release(repository, texts(3))
    backend = WeaviateBackend("http://127.0.0.1:1", None, timeout_s=5)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(WeaviateUnavailable, match=r"http://127\.0\.0\.1:1") as error:
        backend.prepare(release)
    assert time.monotonic() - started < 10
    assert isinstance(error.value, PlatformError)
    assert "AIPLATFORM_WEAVIATE_URL" in str(error.value)
    assert "AIPLATFORM_VECTOR_BACKEND=embedded" in str(error.value)


def test_importing_the_module_does_not_import_weaviate() -> None:
    code = (
        "import sys, aiplatform_dagster.rag.index.weaviate_store; "
        "sys.exit(any(m == 'weaviate' or m.startswith('weaviate.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_server_without_aliases_is_refused_before_anything_is_written(repository) -> None:
    server = WeaviateServerStandIn(version="1.31.2")
    with pytest.raises(WeaviateError, match=r"version 1\.31\.2; index releases need 1\.32"):
        backend_on(server).prepare(build_release(repository, texts(3)))
    assert server.closed and server.created == []


def test_prepare_uploads_the_release_into_its_own_cosine_collection(
    server, backend, repository
) -> None:
    release = build_release(repository, texts(10))
    backend.prepare(release)
    name = backend.collection_name(release.release_id)
    (config,) = server.created
    assert config["class"] == name
    assert config["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
    assert config["vectorConfig"]["default"]["vectorIndexConfig"]["distance"] == "cosine"
    assert [p["name"] for p in config["properties"]] == ["chunk_id"]
    (ids, vectors), *_ = list(release.live_vectors())
    assert server.stored[name] == {
        generate_uuid5(chunk_id): (chunk_id, pytest.approx(vector.tolist()))
        for chunk_id, vector in zip(ids, vectors, strict=True)
    }
    assert server.aliases == {}  # preparing names no pointer

    server.inserted.clear()
    backend.prepare(release)  # already complete: nothing is written again
    assert server.inserted == [] and len(server.created) == 1


def test_a_failed_upload_completes_when_run_again(server, backend, repository) -> None:
    release = build_release(repository, texts(10))
    server.reject = {"doc-6#0"}
    with pytest.raises(WeaviateError, match=r"rejected 1 of 4 objects.*rejected doc-6#0"):
        backend.prepare(release)
    name = backend.collection_name(release.release_id)
    assert 0 < len(server.stored[name]) < 10

    server.reject = set()
    backend.prepare(release)
    assert len(server.stored[name]) == 10
    assert backend.open(release).count() == 10


def test_a_batch_where_every_object_fails_is_reported_too(server, backend, repository) -> None:
    server.reject = {f"doc-{i}#0" for i in range(4)}
    with pytest.raises(WeaviateError, match=r"rejected 4 of 4 objects.*every object was rejected"):
        backend.prepare(build_release(repository, texts(6)))


def test_a_short_count_after_upload_fails_clearly(server, backend, repository) -> None:
    release = build_release(repository, texts(6))
    server.lose = {"doc-2#0"}
    with pytest.raises(WeaviateError, match=r"holds 5 objects but release .* has 6 chunks"):
        backend.prepare(release)


def test_publishing_moves_the_alias_and_retention_drops_collections(
    server, backend, repository
) -> None:
    first = publish(repository, backend, texts(5, "v1"))
    assert server.aliases == {"Aiplatform_Current": backend.collection_name(first.release_id)}
    second = publish(repository, backend, texts(5, "v2"))
    assert backend.alias_target(CURRENT) == backend.collection_name(second.release_id)
    assert set(server.stored) == {backend.collection_name(r.release_id) for r in (first, second)}

    backend.drop(first.release_id)
    assert set(server.stored) == {backend.collection_name(second.release_id)}
    backend.drop(first.release_id)  # already gone: nothing to do


def test_a_collection_an_alias_names_is_never_dropped(server, backend, repository) -> None:
    release = publish(repository, backend, texts(3))
    with pytest.raises(WeaviateError, match="alias Aiplatform_Current names it"):
        backend.drop(release.release_id)
    assert backend.collection_name(release.release_id) in server.stored


def test_pointing_at_a_release_never_uploaded_is_refused(server, backend, repository) -> None:
    release = build_release(repository, texts(3))
    with pytest.raises(MissingCollection, match=f"{release.release_id} has no collection"):
        backend.point(CURRENT, release.release_id)
    assert server.aliases == {}


def test_opening_a_release_never_uploaded_is_a_clear_error(backend, repository) -> None:
    release = build_release(repository, texts(3))
    with pytest.raises(MissingCollection, match="AIPLATFORM_VECTOR_BACKEND=weaviate"):
        backend.open(release)


def test_a_reader_whose_collection_was_deleted_is_told_so(server, backend, repository) -> None:
    release = publish(repository, backend, texts(3))
    reader = backend.open(release)
    del server.stored[backend.collection_name(release.release_id)]
    with pytest.raises(MissingCollection, match="retention deleted it"):
        reader.search(np.ones(DIM), 3)


def test_search_scores_are_cosine_best_first(backend, repository) -> None:
    release = publish(repository, backend, texts(30))
    (ids, vectors), *_ = list(release.live_vectors())
    store = backend.open(release)
    for query in np.random.default_rng(3).standard_normal((5, DIM)):
        assert_same_hits(store.search(query * 3.0, 5), brute_force(ids, vectors, query, 5))


def test_a_timeout_during_search_names_the_server_and_the_setting(
    server, backend, repository, monkeypatch
) -> None:
    release = publish(repository, backend, texts(3))
    reader = backend.open(release)

    def timing_out(*args: Any, **kwargs: Any) -> None:
        raise WeaviateTimeoutError("deadline exceeded")

    monkeypatch.setattr(StandInCollection, "near_vector", timing_out)
    with pytest.raises(WeaviateUnavailable, match=f"{URL}.*AIPLATFORM_WEAVIATE_TIMEOUT_S=30"):
        reader.search(np.ones(DIM), 3)


def test_two_prefixes_share_one_server_without_touching_each_other(server, tmp_path) -> None:
    production, staging = backend_on(server, "Aiplatform"), backend_on(server, "Staging")
    prod_release = publish(IndexRepository(tmp_path / "prod"), production, texts(4, "prod"))
    staging_repository = IndexRepository(tmp_path / "staging")
    replaced = publish(staging_repository, staging, texts(4, "staging"))
    publish(staging_repository, staging, texts(4, "staging2"))
    staging.drop(replaced.release_id)

    assert production.alias_target(CURRENT) == production.collection_name(prod_release.release_id)
    assert production.open(prod_release).count() == 4
    assert sorted(server.aliases) == ["Aiplatform_Current", "Staging_Current"]


def test_preparing_twice_then_publishing_uploads_once(server, backend, repository) -> None:
    """A step re-run after a later failure prepares the same release again."""
    release = build_release(repository, texts(5))
    backend.prepare(release)
    backend.prepare(release)
    publish_release(repository, release, backend, KEEP_ALL)
    assert len(server.created) == 1 and len(server.inserted) == 5


def test_close_closes_the_client_once(server, repository) -> None:
    release: Release = build_release(repository, texts(2))
    with backend_on(server) as backend:
        backend.prepare(release)
    assert server.closed
