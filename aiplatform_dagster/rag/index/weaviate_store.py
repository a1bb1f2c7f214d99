"""Weaviate as the vector backend, for deployments that run a Weaviate server.

It meets the contract of ``EmbeddedVectorIndex``: ``sync`` validates and counts changes with the
embedded index's own helpers, so both backends accept, reject and report the same input, and
``search`` returns cosine similarity (1 - Weaviate's cosine distance), best first.

Each chunk is one object with property ``chunk_id``, one self-provided named vector and UUID
``generate_uuid5(chunk_id)``, so a re-sync upserts rather than duplicates, and only added or changed
vectors are written. Weaviate's HNSW index is approximate: it matches brute force on small
collections, with high but not perfect recall on large ones.

Unlike the embedded index, a sync is not atomic: batches land one by one, so a failed sync can leave
old and new vectors mixed. Re-running it converges, because every write is an idempotent upsert.

``weaviate`` is imported inside methods: it is heavy, and Dagster imports this module in every
process, including those that use the embedded backend.
"""

import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import numpy as np

from aiplatform_dagster.rag.index.hits import Hit

# Shared with the embedded index, so both backends validate, count changes and check queries alike.
from aiplatform_dagster.rag.index.vector_store import (
    EMPTY_SNAPSHOT,
    UNCHANGED_ATOL,
    Snapshot,
    SyncStats,
    check_queries,
    diff_vectors,
    single_query,
    unit_queries,
    validate_vectors,
)

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections import Collection

DEFAULT_COLLECTION = "AiplatformChunk"
DEFAULT_GRPC_PORT = 50051
_PROPERTY = "chunk_id"
_VECTOR = "default"  # the one named vector; named explicitly so reads and writes agree on it


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
            raise ValueError(
                f"Weaviate URL must look like http://host:8080 or https://host, got {url!r}"
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


class WeaviateVectorStore:
    """A ``VectorStore`` in one Weaviate collection; the module docstring explains the layout."""

    def __init__(
        self,
        url: str,
        collection: str = DEFAULT_COLLECTION,
        api_key: str | None = None,
        grpc_port: int | None = None,
        batch_size: int = 256,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        """Parse the URL now, so a bad setting fails early; connect on first use.

        ``client_factory`` returns a connected client, for callers that build their own.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.url = url
        self.collection = collection
        self.endpoint = WeaviateEndpoint.from_url(url, grpc_port)
        self._api_key = api_key
        self._batch_size = batch_size
        self._client_factory = client_factory or self._connect
        self._client: WeaviateClient | None = None
        # Callers such as the ingestion asset never close stores: the finalizer closes the client
        # when the store is collected or the interpreter exits.
        self._closer: weakref.finalize | None = None
        self._dimension: int | None = None  # cached once known, so a search is one request

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

    def count(self) -> int:
        collection = self._existing()
        if collection is None:
            return 0
        return collection.aggregate.over_all(total_count=True).total_count or 0

    @property
    def dimension(self) -> int | None:
        if self._dimension is None and (collection := self._existing()) is not None:
            objects = collection.query.fetch_objects(limit=1, include_vector=True).objects
            self._dimension = len(objects[0].vector[_VECTOR]) if objects else None
        return self._dimension

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """Top-k chunks by cosine similarity, best first."""
        return self.search_batch(single_query(query), k)[0]

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks for each row of ``queries`` (n, dim); one request per query."""
        from weaviate.classes.query import MetadataQuery

        dimension = self.dimension
        queries = check_queries(queries, k, dimension, f"Weaviate collection {self.collection!r}")
        if dimension is None:
            return [[] for _ in queries]
        collection = self._connected().collections.get(self.collection)
        results = (
            collection.query.near_vector(
                near_vector=query.tolist(),
                limit=k,
                target_vector=_VECTOR,
                return_properties=[_PROPERTY],
                return_metadata=MetadataQuery(distance=True),
            )
            for query in unit_queries(queries)
        )
        return [
            [Hit(o.properties[_PROPERTY], 1.0 - o.metadata.distance) for o in result.objects]
            for result in results
        ]

    def sync(self, ids: Sequence[str], vectors: np.ndarray) -> SyncStats:
        """Make the collection hold exactly these ids and vectors; write only what changed."""
        ids = list(ids)
        vectors = validate_vectors(ids, vectors)
        client = self._connected()
        stored = self._stored(client)
        stats = diff_vectors(stored, ids, vectors)  # validates every row before anything is written
        if stored.dimension not in (None, vectors.shape[1]):
            # HNSW fixes the vector length at the first insert: a new embedder needs a new index.
            client.collections.delete(self.collection)
            stored = EMPTY_SNAPSHOT
        if not client.collections.exists(self.collection):
            self._create(client)
        collection = client.collections.get(self.collection)
        self._dimension = None
        self._upsert(collection, ids, vectors, _changed_rows(stored, ids, vectors))
        self._delete(collection, sorted(set(stored.ids) - set(ids)))
        self._dimension = vectors.shape[1] if ids else None
        return stats

    def _connect(self) -> "WeaviateClient":
        import weaviate
        from weaviate.classes.init import Auth
        from weaviate.exceptions import (
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateStartUpError,
        )

        try:
            return weaviate.connect_to_custom(
                **asdict(self.endpoint),
                auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
            )
        except (WeaviateConnectionError, WeaviateGRPCUnavailableError, WeaviateStartUpError) as e:
            raise ConnectionError(
                f"cannot reach Weaviate at {self.url} (gRPC port {self.endpoint.grpc_port}): {e}. "
                "Start the server or set AIPLATFORM_WEAVIATE_URL to its address, or set "
                "AIPLATFORM_VECTOR_BACKEND=embedded to use the embedded index"
            ) from e

    def _connected(self) -> "WeaviateClient":
        if self._client is None:
            client = self._client_factory()
            self._client = client
            self._closer = weakref.finalize(self, client.close)
        return self._client

    def _existing(self) -> "Collection | None":
        client = self._connected()
        if not client.collections.exists(self.collection):
            return None
        return client.collections.get(self.collection)

    def _stored(self, client: "WeaviateClient") -> Snapshot:
        """Every stored id and vector, as the snapshot the shared ``diff_vectors`` reads."""
        if not client.collections.exists(self.collection):
            return EMPTY_SNAPSHOT
        ids, rows = [], []
        for obj in client.collections.get(self.collection).iterator(
            include_vector=True, return_properties=[_PROPERTY], cache_size=self._batch_size
        ):
            ids.append(obj.properties[_PROPERTY])
            rows.append(obj.vector[_VECTOR])
        if not ids:
            return EMPTY_SNAPSHOT
        matrix = np.asarray(rows, dtype=np.float32)
        return Snapshot(ids=ids, vectors=matrix, shards=[], dimension=matrix.shape[1])

    def _create(self, client: "WeaviateClient") -> None:
        from weaviate.classes.config import (
            Configure,
            DataType,
            Property,
            Tokenization,
            VectorDistances,
        )

        client.collections.create(
            self.collection,
            description="RAG chunk vectors written by aiplatform_dagster",
            properties=[
                # Whole-string tokens, so filters on a chunk id match it exactly.
                Property(name=_PROPERTY, data_type=DataType.TEXT, tokenization=Tokenization.FIELD)
            ],
            vector_config=Configure.Vectors.self_provided(
                name=_VECTOR,
                vector_index_config=Configure.VectorIndex.hnsw(
                    distance_metric=VectorDistances.COSINE
                ),
            ),
        )

    def _upsert(
        self, collection: "Collection", ids: list[str], vectors: np.ndarray, rows: np.ndarray
    ) -> None:
        """Write the given rows in batches; stop at the first batch Weaviate rejects."""
        from weaviate.classes.data import DataObject
        from weaviate.exceptions import WeaviateInsertManyAllFailedError
        from weaviate.util import generate_uuid5

        for start in range(0, len(rows), self._batch_size):
            objects = [
                DataObject(
                    properties={_PROPERTY: ids[row]},
                    uuid=generate_uuid5(ids[row]),
                    vector={_VECTOR: np.asarray(vectors[row], dtype=np.float32).tolist()},
                )
                for row in rows[start : start + self._batch_size]
            ]
            try:
                errors = {
                    i: e.message for i, e in collection.data.insert_many(objects).errors.items()
                }
            except WeaviateInsertManyAllFailedError as e:
                errors = dict.fromkeys(range(len(objects)), str(e))
            if errors:
                raise RuntimeError(
                    f"Weaviate rejected {len(errors)} of {len(objects)} objects in a batch "
                    f"written to {self.collection!r} at {self.url} ({start} of {len(rows)} were "
                    f"written before it); first error: {errors[min(errors)]}. Fix the cause and "
                    "re-run the sync: writes are idempotent upserts"
                )

    def _delete(self, collection: "Collection", removed: list[str]) -> None:
        """Delete by UUID in batches, which also keeps each request under the server's limit."""
        from weaviate.classes.query import Filter
        from weaviate.util import generate_uuid5

        for start in range(0, len(removed), self._batch_size):
            uuids = [generate_uuid5(i) for i in removed[start : start + self._batch_size]]
            result = collection.data.delete_many(where=Filter.by_id().contains_any(uuids))
            if result.failed:
                raise RuntimeError(
                    f"Weaviate failed to delete {result.failed} of {len(uuids)} objects from "
                    f"{self.collection!r} at {self.url}; re-run the sync to retry"
                )


def _changed_rows(stored: Snapshot, ids: list[str], vectors: np.ndarray) -> np.ndarray:
    """Rows to write: new ids, and vectors that moved beyond the embedded index's tolerance.

    ``diff_vectors`` only counts them; this finds which, with the same tolerance.
    """
    if stored.dimension != vectors.shape[1]:
        return np.arange(len(ids))
    old_rows = {chunk_id: row for row, chunk_id in enumerate(stored.ids)}
    positions = np.fromiter((old_rows.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
    changed = positions < 0
    kept = np.flatnonzero(~changed)
    if len(kept):
        new = np.asarray(vectors[kept], dtype=np.float32)
        changed[kept] = np.abs(stored.vectors[positions[kept]] - new).max(axis=1) > UNCHANGED_ATOL
    return np.flatnonzero(changed)
