"""Cosine vector search: the interface every backend meets and the embedded default index.

Why this method (2-core VM, 1M x 384 unit vectors, one query, p50 without neighbouring load):
- numpy float32 ``matrix @ q`` + argpartition: 58-66 ms, memory-bound (1.5 GB read per query).
- faiss IndexFlatIP: 117 ms; one query runs on one thread, and two OpenMP threads made it slower.
- faiss IndexScalarQuantizer QT_fp16 (half the bytes, SIMD fp16 decode): 61-83 ms on one thread.
  faiss parallelises over queries only, so ``omp_set_num_threads`` does nothing for one query.
- That fp16 scan cut into shards searched from a thread pool (faiss releases the GIL): 29-33 ms with
  AVX-512, 38-45 ms with FAISS_SIMD_LEVEL=AVX2; recall@10 against numpy 1.0.
So the index keeps the float32 matrix for exact scores and fp16 shards for the scan. Each shard
returns its top ``4 * k`` by fp16 inner product and the union is re-scored exactly in float32 from
the memory-mapped matrix. fp16 rounding moves a score by ~1e-5, far less than the usual gap between
the k-th and 4k-th neighbour, so results match brute force and scores are exact cosine.

Shards are faiss files opened with IO_FLAG_MMAP_IFC (faiss >= 1.11): opening a 1M index takes
60 ms, mostly ids.json, where rebuilding fp16 from float32 took 2-3.6 s; processes share the pages.

Above ``ApproximatePolicy.min_rows`` a segment gets an IVF index instead of the scan shards
(``rag/index/approximate.py``): its nprobe is tuned to a recall target when the segment is written,
and its candidates are re-scored the same exact way.

The vectors of an index release live in its segments (``rag/index/segments.py``): each segment
folder holds ``vectors.npy`` (float32) and ``scan-NNNN.faiss`` for its rows, written once and never
changed. ``EmbeddedVectorIndex`` searches the live rows of a release's segments; rows a later
release dropped are skipped by a mask, so a release that changes 1% of the chunks shares the rest.
"""

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiplatform_dagster.rag.index import approximate
from aiplatform_dagster.rag.index.approximate import (
    DEFAULT_POLICY,
    OVERSAMPLE,
    ApproximatePolicy,
    Log,
    rescore,
)
from aiplatform_dagster.rag.index.hits import Hit

VECTORS_FILE = "vectors.npy"
DEFAULT_SHARD_ROWS = 131_072
_NORM_TOLERANCE = 1e-3
UNCHANGED_ATOL = 1e-6
_CHUNK_ROWS = 65_536  # rows per pass over the input: keeps temporaries near 100 MB at dim 384


@dataclass(frozen=True)
class SyncStats:
    """What a sync changed, so assets can report it and skip work when nothing did."""

    added: int
    updated: int
    removed: int
    unchanged: int
    total: int


class VectorStore(Protocol):
    """What the query path needs from any vector backend's view of one index release."""

    def search(self, query: np.ndarray, k: int) -> list[Hit]: ...

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[Hit]]: ...

    def count(self) -> int: ...

    @property
    def dimension(self) -> int | None: ...


@dataclass(frozen=True)
class Snapshot:
    """The vectors of one segment: everything a search reads, memory-mapped."""

    ids: list[str]
    vectors: np.ndarray  # (count, dim) float32, memory-mapped
    shards: list[tuple[int, Any]]  # (first row, faiss fp16 index); empty with an IVF index
    dimension: int | None
    approximate: Any | None = None  # faiss IVF index, searched with ``nprobe`` cells
    nprobe: int = 0

    @property
    def count(self) -> int:
        return len(self.ids)


EMPTY_SNAPSHOT = Snapshot(ids=[], vectors=np.empty((0, 0), np.float32), shards=[], dimension=None)


@dataclass(frozen=True)
class LivePart:
    """A segment's vectors and which of its rows the release still holds (None: all)."""

    snapshot: Snapshot
    live: np.ndarray | None = None

    @property
    def dead(self) -> int:
        return 0 if self.live is None else int(self.snapshot.count - self.live.sum())

    @property
    def count(self) -> int:
        return self.snapshot.count - self.dead

    @cached_property
    def live_bits(self) -> np.ndarray | None:
        """The live mask as the little-endian bitmap faiss's ID selector reads."""
        return None if self.live is None else np.packbits(self.live, bitorder="little")


class EmbeddedVectorIndex:
    """Cosine search over the segments of one release; the module docstring explains how.

    Immutable: a release never changes, so searches need no lock and a reader keeps its view
    for as long as it holds the object.
    """

    def __init__(self, parts: Sequence[LivePart]) -> None:
        self._parts = [part for part in parts if part.count]
        dimensions = {part.snapshot.dimension for part in self._parts}
        if len(dimensions) > 1:
            raise ValueError(f"segments of one release disagree on dimension: {sorted(dimensions)}")
        self._dimension = dimensions.pop() if dimensions else None

    def count(self) -> int:
        return sum(part.count for part in self._parts)

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """Top-k chunks by cosine similarity, best first."""
        return self.search_batch(single_query(query), k)[0]

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks for each row of ``queries`` (n, dim)."""
        queries = check_queries(queries, k, self._dimension, "index release")
        if not self._parts:
            return [[] for _ in queries]
        unit = unit_queries(queries)
        per_part = [_search_part(part, unit, k) for part in self._parts]
        results = []
        for query_number in range(len(unit)):
            merged = [hit for hits in per_part for hit in hits[query_number]]
            merged.sort(key=lambda hit: -hit.score)
            results.append(merged[:k])
        return results


def _search_part(part: LivePart, unit: np.ndarray, k: int) -> list[list[Hit]]:
    """Each query's top-k live rows of one segment, exactly scored."""
    snapshot = part.snapshot
    if snapshot.approximate is not None:
        found = approximate.candidates(
            snapshot.approximate, unit, OVERSAMPLE * k, snapshot.nprobe, part.live_bits
        )
        pairs = zip(found, unit, strict=True)
        return [_hits(snapshot, rows[rows >= 0], query, k) for rows, query in pairs]
    wanted = min(k + part.dead, snapshot.count)
    candidates = np.concatenate(
        list(_pool().map(lambda shard: _scan(shard, unit, wanted), snapshot.shards)), axis=1
    )
    hits = []
    for rows, query in zip(candidates, unit, strict=True):
        if part.live is not None:
            rows = rows[part.live[rows]]
        hits.append(_hits(snapshot, rows, query, k))
    return hits


@cache
def _pool() -> ThreadPoolExecutor:
    """One pool per process: shards of every index share the cores."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="vector-scan")


def _scan(shard: tuple[int, Any], queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the shard's fp16 top candidates for each query."""
    start, index = shard
    _, labels = index.search(queries, min(OVERSAMPLE * k, index.ntotal))
    return labels + start


def _hits(snapshot: Snapshot, rows: np.ndarray, query: np.ndarray, k: int) -> list[Hit]:
    """The candidates' top k by exact float32 cosine."""
    best, scores = rescore(snapshot.vectors, rows, query, k)
    return [Hit(snapshot.ids[row], float(score)) for row, score in zip(best, scores, strict=True)]


def single_query(query: np.ndarray) -> np.ndarray:
    """One (dim,) query as the (1, dim) batch every backend's ``search_batch`` takes."""
    query = np.asarray(query)
    if query.ndim != 1:
        raise ValueError(
            f"query must have shape (dim,), got {query.shape}; use search_batch for several"
        )
    return query[None, :]


def check_queries(queries: np.ndarray, k: int, dimension: int | None, store: str) -> np.ndarray:
    """The (n, dim) query batch, checked against ``k`` and the stored ``dimension``.

    ``store`` names the backend's storage in the error (an index, a Weaviate collection).
    """
    if k <= 0:
        raise ValueError(f"k must be a positive number of hits, got {k}")
    queries = np.asarray(queries)
    if queries.ndim != 2:
        raise ValueError(f"queries must have shape (n, dim), got {queries.shape}")
    if dimension is not None and queries.shape[1] != dimension:
        raise ValueError(
            f"{store} has dim {dimension}, query has {queries.shape[1]}: embed queries with "
            "the embedder that built the index, or re-run chunk_embeddings with this one"
        )
    return queries


def unit_queries(queries: np.ndarray) -> np.ndarray:
    """Normalised float32 queries, so scores are cosine whatever the caller passed."""
    queries = queries.astype(np.float32)
    norms = np.linalg.norm(queries, axis=1)
    if not np.isfinite(norms).all() or (norms == 0).any():
        raise ValueError("queries must be finite and non-zero; check the query embedding")
    return np.ascontiguousarray(queries / norms[:, None])


def validate_vectors(ids: list[str], vectors: np.ndarray) -> np.ndarray:
    """Cheap whole-input checks, before any vector is read."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"vectors must be a 2-D (rows, dim) array, got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got {vectors.dtype}")
    if len(ids) != len(vectors):
        raise ValueError(
            f"ids has {len(ids)} entries but vectors has {len(vectors)} rows: pass one id per row"
        )
    if not all(isinstance(chunk_id, str) for chunk_id in ids):
        raise ValueError("ids must be strings (chunk ids)")
    if len(set(ids)) != len(ids):
        repeated = [chunk_id for chunk_id, n in Counter(ids).items() if n > 1]
        raise ValueError(
            f"ids must be unique; {len(repeated)} repeat, e.g. {repeated[:3]}: deduplicate chunks"
        )
    return vectors


def _checked_chunk(ids: list[str], vectors: np.ndarray, start: int) -> np.ndarray:
    """Rows from ``start`` as float32, rejecting NaN/inf and vectors that are not unit-norm."""
    chunk = np.asarray(vectors[start : start + _CHUNK_ROWS], dtype=np.float32)
    finite = np.isfinite(chunk).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        raise ValueError(
            f"vector of id {ids[row]!r} (row {row}) contains NaN or inf: fix the embedding step"
        )
    norms = np.linalg.norm(chunk, axis=1)
    off = np.abs(norms - 1.0) > _NORM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"vector of id {ids[start + i]!r} (row {start + i}) has norm {norms[i]:.4g}, not 1: "
            "L2-normalise embeddings before sync (e.g. normalize_embeddings=True)"
        )
    return chunk


def write_vector_part(
    folder: Path,
    ids: list[str],
    vectors: np.ndarray,
    policy: ApproximatePolicy = DEFAULT_POLICY,
    questions: np.ndarray | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    log: Log = lambda _: None,
) -> dict[str, Any]:
    """Validate and write float32 vectors, then the IVF index a large segment proves good enough
    (on ``questions``, embedded by the same model, when given), or else the fp16 scan shards;
    return what ``open`` needs."""
    import faiss

    vectors = validate_vectors(ids, vectors)
    matrix = np.lib.format.open_memmap(
        folder / VECTORS_FILE, mode="w+", dtype=np.float32, shape=vectors.shape
    )
    for start in range(0, len(ids), _CHUNK_ROWS):
        chunk = _checked_chunk(ids, vectors, start)
        matrix[start : start + len(chunk)] = chunk
    matrix.flush()
    meta: dict[str, Any] = {"dimension": int(vectors.shape[1])}
    if len(ids) >= policy.min_rows:
        built = approximate.build(matrix, policy, questions, log)
        meta["approximate"] = built.summary
        if built.index is not None:
            faiss.write_index(built.index, str(folder / approximate.APPROXIMATE_FILE))
            return {**meta, "shards": [], "scan": built.summary["kind"]}
    shards = []
    for number, start in enumerate(range(0, len(ids), shard_rows)):
        scan = faiss.IndexScalarQuantizer(
            vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        scan.add_sa_codes(matrix[start : start + shard_rows].astype(np.float16).view(np.uint8))
        name = f"scan-{number:04d}.faiss"
        faiss.write_index(scan, str(folder / name))
        shards.append((start, name))
    del matrix
    return {**meta, "shards": shards, "scan": "faiss-sq-fp16"}


def open_vector_part(folder: Path, ids: list[str], meta: dict[str, Any]) -> Snapshot:
    """Memory-map one segment's vectors (the caller has checked the files' sizes)."""
    import faiss

    summary = meta.get("approximate", {})
    ivf = None
    if summary.get("used"):
        ivf = faiss.read_index(str(folder / approximate.APPROXIMATE_FILE), faiss.IO_FLAG_MMAP_IFC)
    return Snapshot(
        ids=ids,
        vectors=np.load(folder / VECTORS_FILE, mmap_mode="r"),
        shards=[
            (start, faiss.read_index(str(folder / name), faiss.IO_FLAG_MMAP_IFC))
            for start, name in meta["shards"]
        ],
        dimension=meta["dimension"],
        approximate=ivf,
        nprobe=summary.get("nprobe", 0),
    )
