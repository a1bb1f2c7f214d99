"""Weaviate as the vector backend: one collection per index release, one alias per pointer.

The repository (``rag/index/releases.py``) stays the source of truth; this backend mirrors it on
a server. ``prepare`` uploads a release's live vectors into its own collection
``{Prefix}_{release id}``, ``point`` moves the collection alias ``{Prefix}_{Pointer}`` (for
example ``Aiplatform_Current``) to it, and ``drop`` deletes it when retention deletes the
release. The prefix scopes every name, so two environments can share one server. Aliases exist
from Weaviate 1.32; older servers are refused when the client connects.

Each chunk is one object with property ``chunk_id``, one self-provided named vector and UUID
``generate_uuid5(chunk_id)``, so uploading a release again overwrites rather than duplicates: a
``prepare`` that failed half-way completes when run again, and checks the object count at the end.

Readers open a release's collection by its own name, never through the alias, so a reader keeps
its release for life as the embedded index's readers do; scores are cosine similarity
(1 - Weaviate's cosine distance), best first. Weaviate's HNSW index is approximate: it matches
brute force on small collections, with high but not perfect recall on large ones.

``weaviate`` is imported inside methods: it is heavy, and Dagster imports this module in every
process, including those that use the embedded backend.
"""

import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import numpy as np

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.index.vector_store import check_queries, single_query, unit_queries

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections import Collection

    from aiplatform_dagster.rag.index.releases import Release

DEFAULT_PREFIX = "Aiplatform"
DEFAULT_GRPC_PORT = 50051
MINIMUM_VERSION = (1, 32)
"""Collection aliases, which the pointers are, exist from this server version."""
_PROPERTY = "chunk_id"
_VECTOR = "default"  # the one named vector; named explicitly so reads and writes agree on it
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class WeaviateError(PlatformError):
    """A Weaviate operation failed; the message names the server, what failed and the fix."""


class WeaviateUnavailable(WeaviateError):
    """The server cannot be reached, or stopped answering within the timeout."""


class MissingCollection(WeaviateError):
    """A release has no collection on the server: never uploaded, or dropped by retention."""


class WeaviateSettingError(WeaviateError, ValueError):
    """A URL or name prefix that cannot work, found before connecting."""


@dataclass(frozen=True)
class WeaviateEndpoint:
    """``connect_to_custom``'s arguments, parsed from one URL so deployments set one variable."""

    http_host: str
    http_port: int
    http_secure: bool
    grpc_host: str
    grpc_port: int
    grpc_secure: bool

    @classmethod
    def from_url(cls, url: str, grpc_port: int | None = None) -> "WeaviateEndpoint":
        """HTTP on the URL's port (80/443 by default); gRPC on the same host, secure with https."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WeaviateSettingError(
                f"Weaviate URL must look like http://host:8080 or https://host, got {url!r}: "
                "fix AIPLATFORM_WEAVIATE_URL"
            )
        secure = parts.scheme == "https"
        return cls(
            http_host=parts.hostname,
            http_port=parts.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=parts.hostname,
            grpc_port=grpc_port or DEFAULT_GRPC_PORT,
            grpc_secure=secure,
        )


class WeaviateBackend:
    """A ``VectorBackend`` on a Weaviate server; the module docstring explains the layout."""

    name = "weaviate"

    def __init__(
        self,
        url: str,
        api_key: str | None,
        prefix: str = DEFAULT_PREFIX,
        grpc_port: int | None = None,
        timeout_s: float = 30,
        batch_size: int = 512,
        client_factory: "Callable[[], WeaviateClient] | None" = None,
    ) -> None:
        """Check the settings now, so a bad one fails early; connect on first use.

        ``client_factory`` returns a connected client, for callers that build their own.
        """
        if not _NAME.fullmatch(prefix):
            raise WeaviateSettingError(
                f"Weaviate name prefix must be a letter followed by letters, digits or '_', got "
                f"{prefix!r}: fix AIPLATFORM_WEAVIATE_PREFIX"
            )
        if timeout_s <= 0 or batch_size <= 0:
            raise WeaviateSettingError(
                f"timeout_s and batch_size must be positive, got {timeout_s} and {batch_size}"
            )
        self.url = url
        self.endpoint = WeaviateEndpoint.from_url(url, grpc_port)
        self.prefix = _capitalised(prefix)
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._batch_size = batch_size
        self._client_factory = client_factory or self._connect
        self._client: WeaviateClient | None = None
        self._connecting = threading.Lock()
        # Callers such as the query engine never close backends: the finalizer closes the
        # client when the backend is collected or the interpreter exits.
        self._closer: weakref.finalize | None = None

    def collection_name(self, release_id: str) -> str:
        """``{Prefix}_{release id}``, with the characters class names refuse turned into '_'."""
        return f"{self.prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', release_id)}"

    def alias_name(self, pointer: str) -> str:
        """``{Prefix}_{Pointer}``: ``current`` is ``Aiplatform_Current``."""
        if not pointer.isidentifier():
            raise ValueError(f"pointer names are identifiers like 'current', got {pointer!r}")
        return f"{self.prefix}_{_capitalised(pointer)}"

    def prepare(self, release: "Release") -> None:
        """Upload the release into its collection, unless it is already complete there."""
        name = self.collection_name(release.release_id)
        expected = int(release.manifest["counts"]["chunks"])
        with self._calls(f"upload release {release.release_id} into collection {name}"):
            client = self._connected()
            if client.collections.exists(name):
                if _count(client.collections.get(name)) == expected:
                    return
            else:
                _create(client, name, release.release_id)
            collection = client.collections.get(name)
            for ids, vectors in release.live_vectors():
                self._upload(collection, ids, vectors)
            stored = _count(collection)
        if stored != expected:
            raise WeaviateError(
                f"collection {name} on Weaviate at {self.url} holds {stored} objects but release "
                f"{release.release_id} has {expected} chunks. Something else writes into it: "
                f"delete the collection and publish the release again"
            )

    def open(self, release: "Release") -> "WeaviateReleaseVectors":
        """The read-only view of one release's collection; fails clearly if it is missing."""
        name = self.collection_name(release.release_id)
        with self._calls(f"open collection {name}"):
            exists = self._connected().collections.exists(name)
        if not exists:
            raise self._missing(name, release.release_id)
        chunks = int(release.manifest["counts"]["chunks"])
        dimension = release.manifest["embedder"]["dimension"] if chunks else None
        return WeaviateReleaseVectors(self, name, release.release_id, dimension)

    def point(self, pointer: str, release_id: str) -> None:
        """Create or move the pointer's alias to the release's collection."""
        alias, target = self.alias_name(pointer), self.collection_name(release_id)
        with self._calls(f"point alias {alias} at collection {target}"):
            client = self._connected()
            if not client.collections.exists(target):
                raise self._missing(target, release_id)
            current = client.alias.get(alias_name=alias)
            if current is None:
                client.alias.create(alias_name=alias, target_collection=target)
            elif current.collection != target:
                client.alias.update(alias_name=alias, new_target_collection=target)

    def drop(self, release_id: str) -> None:
        """Delete the release's collection (retention); refuse while any alias names it."""
        name = self.collection_name(release_id)
        with self._calls(f"delete collection {name}"):
            client = self._connected()
            aliases = sorted(client.alias.list_all(collection=name))
            if aliases:
                raise WeaviateError(
                    f"not deleting collection {name} on Weaviate at {self.url}: alias "
                    f"{', '.join(aliases)} names it, so readers may be using it. Point the alias "
                    "at another release first; retention will then delete it"
                )
            if client.collections.exists(name):
                client.collections.delete(name)

    def alias_target(self, pointer: str) -> str | None:
        """The collection the pointer's alias names on the server, or None if it has none."""
        alias = self.alias_name(pointer)
        with self._calls(f"read alias {alias}"):
            found = self._connected().alias.get(alias_name=alias)
        return found.collection if found else None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._client = self._closer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _connected(self) -> "WeaviateClient":
        with self._connecting:
            if self._client is None:
                client = self._client_factory()
                try:
                    self._check_version(client)
                except BaseException:
                    client.close()
                    raise
                self._closer = weakref.finalize(self, client.close)
                self._client = client
            return self._client

    def _connect(self) -> "WeaviateClient":
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        timeout = Timeout(init=self.timeout_s, query=self.timeout_s, insert=self.timeout_s)
        return weaviate.connect_to_custom(
            **asdict(self.endpoint),
            auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
            additional_config=AdditionalConfig(timeout=timeout),
        )

    def _check_version(self, client: "WeaviateClient") -> None:
        version = str(client.get_meta().get("version", ""))
        found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
        if found < MINIMUM_VERSION:
            raise WeaviateError(
                f"Weaviate at {self.url} is version {version or 'unknown'}; index releases need "
                f"{'.'.join(map(str, MINIMUM_VERSION))} or later (collection aliases). Upgrade "
                "the server, or set AIPLATFORM_VECTOR_BACKEND=embedded"
            )

    @contextmanager
    def _calls(self, action: str) -> Iterator[None]:
        """Turn the client's errors into ones that name the server, the action and the fix."""
        from weaviate.exceptions import (
            WeaviateBaseError,
            WeaviateClosedClientError,
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateRetryError,
            WeaviateStartUpError,
            WeaviateTimeoutError,
        )

        unreachable = (
            WeaviateClosedClientError,
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateRetryError,
            WeaviateStartUpError,
            WeaviateTimeoutError,
        )
        try:
            yield
        except unreachable as error:
            raise WeaviateUnavailable(
                f"cannot reach Weaviate at {self.url} (gRPC port {self.endpoint.grpc_port}) to "
                f"{action} within AIPLATFORM_WEAVIATE_TIMEOUT_S={self.timeout_s:g} seconds: "
                f"{error}. Start the server or set AIPLATFORM_WEAVIATE_URL to its address, raise "
                "the timeout if the server is slow, or set AIPLATFORM_VECTOR_BACKEND=embedded to "
                "use the embedded index"
            ) from error
        except WeaviateBaseError as error:
            raise WeaviateError(f"Weaviate at {self.url} failed to {action}: {error}") from error

    def _missing(self, name: str, release_id: str) -> MissingCollection:
        return MissingCollection(
            f"index release {release_id} has no collection {name} on Weaviate at {self.url}: it "
            "was never uploaded there (built with another vector backend?) or retention deleted "
            "it. Publish a release with AIPLATFORM_VECTOR_BACKEND=weaviate (materialise the "
            "ingestion group), or point at a release that has one"
        )

    def _upload(self, collection: "Collection", ids: list[str], vectors: np.ndarray) -> None:
        """Write in batches; stop at the first batch Weaviate rejects any object of."""
        from weaviate.classes.data import DataObject
        from weaviate.exceptions import WeaviateInsertManyAllFailedError
        from weaviate.util import generate_uuid5

        for start in range(0, len(ids), self._batch_size):
            objects = [
                DataObject(
                    properties={_PROPERTY: chunk_id},
                    uuid=generate_uuid5(chunk_id),
                    vector={_VECTOR: np.asarray(vector, dtype=np.float32).tolist()},
                )
                for chunk_id, vector in zip(
                    ids[start : start + self._batch_size],
                    vectors[start : start + self._batch_size],
                    strict=True,
                )
            ]
            try:
                errors = {
                    i: e.message for i, e in collection.data.insert_many(objects).errors.items()
                }
            except WeaviateInsertManyAllFailedError as e:
                errors = dict.fromkeys(range(len(objects)), str(e))
            if errors:
                raise WeaviateError(
                    f"Weaviate at {self.url} rejected {len(errors)} of {len(objects)} objects "
                    f"written to {collection.name}; first error: {errors[min(errors)]}. Fix the "
                    "cause and publish again: the upload resumes, writes are idempotent"
                )


class WeaviateReleaseVectors:
    """A read-only ``VectorStore`` over one release's collection, named directly (not the alias)."""

    def __init__(
        self, backend: WeaviateBackend, collection: str, release_id: str, dimension: int | None
    ) -> None:
        self._backend = backend
        self.collection = collection
        self.release_id = release_id
        self._dimension = dimension

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def count(self) -> int:
        with self._reading("count the objects of"):
            return _count(self._backend._connected().collections.get(self.collection))

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """Top-k chunks by cosine similarity, best first."""
        return self.search_batch(single_query(query), k)[0]

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks for each row of ``queries`` (n, dim); one request per query."""
        from weaviate.classes.query import MetadataQuery

        store = f"Weaviate collection {self.collection!r}"
        queries = check_queries(queries, k, self._dimension, store)
        if self._dimension is None:
            return [[] for _ in queries]
        with self._reading("search"):
            collection = self._backend._connected().collections.get(self.collection)
            results = [
                collection.query.near_vector(
                    near_vector=query.tolist(),
                    limit=k,
                    target_vector=_VECTOR,
                    return_properties=[_PROPERTY],
                    return_metadata=MetadataQuery(distance=True),
                )
                for query in unit_queries(queries)
            ]
        return [
            [Hit(o.properties[_PROPERTY], 1.0 - o.metadata.distance) for o in result.objects]
            for result in results
        ]

    @contextmanager
    def _reading(self, action: str) -> Iterator[None]:
        """A failure on a collection retention has since deleted says so, not a server error."""
        try:
            with self._backend._calls(f"{action} collection {self.collection}"):
                yield
        except WeaviateUnavailable:
            raise
        except WeaviateError as error:
            with self._backend._calls(f"check collection {self.collection}"):
                gone = not self._backend._connected().collections.exists(self.collection)
            if gone:
                raise self._backend._missing(self.collection, self.release_id) from error
            raise


def _create(client: "WeaviateClient", name: str, release_id: str) -> None:
    from weaviate.classes.config import (
        Configure,
        DataType,
        Property,
        Tokenization,
        VectorDistances,
    )

    client.collections.create(
        name,
        description=f"chunk vectors of index release {release_id}, written by aiplatform_dagster",
        properties=[
            # Whole-string tokens, so filters on a chunk id match it exactly.
            Property(name=_PROPERTY, data_type=DataType.TEXT, tokenization=Tokenization.FIELD)
        ],
        vector_config=Configure.Vectors.self_provided(
            name=_VECTOR,
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
        ),
    )


def _count(collection: Any) -> int:
    return collection.aggregate.over_all(total_count=True).total_count or 0


def _capitalised(name: str) -> str:
    """Weaviate class and alias names start upper-case; the server would change them otherwise."""
    return name[:1].upper() + name[1:]
