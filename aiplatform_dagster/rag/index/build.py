"""Building a release in steps, each reading the previous step's files from one build folder.

A build stages everything under ``builds/<build id>/`` (the Dagster run id, or a fresh id on
the command line), where no reader looks. Its plan compares the new chunks with the ``current``
release: rows whose chunk is unchanged stay where they are, chunks whose text is unchanged
copy their vector, the rest are embedded. ``assemble_release`` then writes one new segment and
an immutable release that shares everything else; ``publish_release`` moves the pointer.
"""

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiplatform_dagster.models.embedders import Embedder, Progress
from aiplatform_dagster.rag.index.approximate import Log
from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.index.bm25 import term_counts
from aiplatform_dagster.rag.index.releases import (
    CURRENT,
    IndexRepository,
    Release,
    ReleaseError,
    Retention,
)
from aiplatform_dagster.rag.index.segments import (
    CorruptIndexError,
    Segment,
    merge_term_counts,
    read_records,
    write_records,
    write_segment,
)
from aiplatform_dagster.rag.index.text_analysis import ANALYZER_VERSION, analyze
from aiplatform_dagster.rag.index.vector_backends import VectorBackend
from aiplatform_dagster.rag.ingest.chunking import Chunk, ChunkingConfig
from aiplatform_dagster.rag.ingest.documents import Document

BM25_PARAMETERS = {"k1": 0.9, "b": 0.4, "idf": "lucene", "analyzer": ANALYZER_VERSION}
MAX_SEGMENTS = 8
MAX_DEAD_SHARE = 0.25
"""Past either limit a release is compacted into one segment: searches stay fast."""

_DOCUMENTS = "documents.parquet"
_CHUNKS = "chunks.parquet"
_PLAN = "plan.json"
_VECTORS = "vectors.npy"
_TERMS = "terms.json"
_COUNTS = "counts.npz"
_RELEASE = "release.json"
_QUESTIONS = "questions.npy"


class BuildError(ReleaseError):
    """A build step found its inputs missing or inconsistent."""


@dataclass(frozen=True)
class Plan:
    """What a build reuses from its base release and what it must compute."""

    build_id: str
    predecessor: str | None
    """What ``current`` named when the build planned: it publishes only over that."""
    base: str | None
    """The release whose rows and vectors are reused (None: build everything)."""
    base_note: str
    embedder_identity: str
    embedder_model_id: str
    chunking: dict[str, int]
    kept: dict[str, list[int]]
    """Base segment id -> rows the new release keeps unchanged."""
    new_rows: list[int]
    """Positions in the build's chunks that go into the new segment."""
    copied: dict[int, tuple[str, int]] = field(default_factory=dict)
    """New row -> (base segment, row) whose vector it copies: same text, other metadata."""

    @property
    def kept_rows(self) -> int:
        return sum(len(rows) for rows in self.kept.values())


@dataclass(frozen=True)
class EmbeddingReport:
    computed: int
    copied: int
    kept: int
    seconds: float
    from_shards: int = 0
    """Rows whose vectors the build's shards embedded (``embedding.embed_shard``)."""


class Build:
    """The staging folder of one build."""

    def __init__(self, repository: IndexRepository, build_id: str) -> None:
        if not build_id or "/" in build_id or build_id.startswith("."):
            raise ValueError(f"build ids are plain names, got {build_id!r}")
        self.repository = repository
        self.build_id = build_id
        self.folder = repository.builds_dir / build_id

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def path(self, name: str, producing_step: str) -> Path:
        path = self.folder / name
        if not path.exists():
            gone = "" if self.folder.exists() else " (it was published or has expired)"
            raise BuildError(
                f"build {self.build_id}{gone} has no {name}: run {producing_step} for this "
                "build first (materialise the ingestion group, or `make ingest`)"
            )
        return path

    def write_documents(self, documents: Sequence[Document]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / _DOCUMENTS, lambda p: write_records(p, documents, Document))

    def documents(self) -> list[Document]:
        return read_records(self.path(_DOCUMENTS, "source_documents"), Document)

    def chunks(self) -> list[Chunk]:
        return read_records(self.path(_CHUNKS, "document_chunks"), Chunk)

    def plan(self) -> Plan:
        raw = json.loads(self.path(_PLAN, "document_chunks").read_text("utf-8"))
        raw["copied"] = {int(row): tuple(source) for row, source in raw["copied"].items()}
        return Plan(**raw)

    def new_vectors(self) -> np.ndarray:
        return np.load(self.path(_VECTORS, "chunk_embeddings"))

    def questions(self) -> np.ndarray | None:
        """The embedded questions an approximate index is tuned on; None when none were."""
        path = self.folder / _QUESTIONS
        return np.load(path) if path.exists() else None

    def release_id(self) -> str:
        """The release ``assemble_release`` wrote from this build."""
        path = self.path(_RELEASE, "index_release")
        return json.loads(path.read_text("utf-8"))["release_id"]

    def write_new_vectors(self, vectors: np.ndarray) -> None:
        write_atomically(self.folder / _VECTORS, lambda p: _write_with(p, np.save, vectors))

    def write_questions(self, embedded: np.ndarray) -> None:
        write_atomically(self.folder / _QUESTIONS, lambda p: _write_with(p, np.save, embedded))

    def new_term_counts(self) -> tuple[list[str], sp.csr_matrix]:
        terms = json.loads(self.path(_TERMS, "bm25_index").read_text("utf-8"))
        return terms, sp.load_npz(self.path(_COUNTS, "bm25_index")).tocsr()


def plan_build(
    build: Build,
    chunks: Sequence[Chunk],
    identity: str,
    model_id: str,
    config: ChunkingConfig,
    reuse: bool = True,
) -> Plan:
    """Store the chunks and decide, against ``current``, what the build reuses."""
    repository = build.repository
    predecessor = repository.pointer(CURRENT)
    base, note = _usable_base(repository, predecessor, identity, reuse)
    kept: dict[str, list[int]] = {}
    new_rows: list[int] = []
    copied: dict[int, tuple[str, int]] = {}
    located, by_text = _base_rows(base)
    for position, chunk in enumerate(chunks):
        home = located.get(chunk.chunk_id)
        if home is not None and home[2] == chunk:
            kept.setdefault(home[0], []).append(home[1])
            continue
        new_rows.append(position)
        source = by_text.get(_text_key(chunk))
        if source is not None:
            copied[len(new_rows) - 1] = source
    plan = Plan(
        build_id=build.build_id,
        predecessor=predecessor,
        base=base.release_id if base else None,
        base_note=note,
        embedder_identity=identity,
        embedder_model_id=model_id,
        chunking={"chunk_tokens": config.chunk_tokens, "overlap_tokens": config.overlap_tokens},
        kept={segment: sorted(rows) for segment, rows in kept.items()},
        new_rows=new_rows,
        copied=copied,
    )
    build.folder.mkdir(parents=True, exist_ok=True)
    write_atomically(build.folder / _CHUNKS, lambda p: write_records(p, chunks, Chunk))
    plan_text = json.dumps(asdict(plan))
    write_atomically(build.folder / _PLAN, lambda p: p.write_text(plan_text, "utf-8"))
    return plan


def count_build_terms(build: Build) -> int:
    """BM25 term frequencies of the new segment's rows; returns its vocabulary size."""
    plan = build.plan()
    chunks = build.chunks()
    terms, counts = term_counts([analyze(chunks[i].indexed_text) for i in plan.new_rows])
    terms_text = json.dumps(terms, ensure_ascii=False)
    write_atomically(build.folder / _TERMS, lambda p: p.write_text(terms_text))
    write_atomically(
        build.folder / _COUNTS, lambda p: _write_with(p, sp.save_npz, counts, compressed=True)
    )
    return len(terms)


def assemble_release(
    build: Build, provenance: dict[str, Any] | None = None, log: Log = lambda _: None
) -> Release:
    """Write the new segment and the release that joins it to the kept rows of the base;
    ``log`` hears about long steps (an approximate index's training and tuning)."""
    repository = build.repository
    plan = build.plan()
    chunks = build.chunks()
    documents = build.documents()
    new_chunks = [chunks[position] for position in plan.new_rows]
    vectors = build.new_vectors()
    terms, counts = build.new_term_counts()
    if len(vectors) != len(new_chunks) or counts.shape[1] != len(new_chunks):
        raise BuildError(
            f"build {build.build_id}: {len(new_chunks)} new chunks but {len(vectors)} vectors "
            f"and {counts.shape[1]} term-count rows: run chunk_embeddings and bm25_index again"
        )
    base = repository.open(plan.base) if plan.base else None
    questions = build.questions()
    parts: list[tuple[Segment, np.ndarray]] = []
    for segment in base.segments if base else []:
        rows = plan.kept.get(segment.segment_id, [])
        if rows:
            mask = np.zeros(segment.rows, dtype=bool)
            mask[rows] = True
            parts.append((segment, mask))
    if new_chunks:
        segment = _new_segment(repository, new_chunks, vectors, terms, counts, questions, log)
        parts.append((segment, np.ones(segment.rows, dtype=bool)))
    compacted = _needs_compaction(parts)
    if compacted:
        parts = [_compact(repository, parts, questions, log)]
    total = sum(int(mask.sum()) for _, mask in parts)
    if total != len(chunks):
        raise BuildError(f"build {build.build_id}: release would hold {total} of {len(chunks)}")
    manifest = {
        "created_at": _now(),
        "predecessor": plan.predecessor,
        "base": plan.base,
        "base_note": plan.base_note,
        "build_id": build.build_id,
        "embedder": {
            "identity": plan.embedder_identity,
            "model_id": plan.embedder_model_id,
            "dimension": int(vectors.shape[1]) if len(vectors) else _base_dimension(base),
        },
        "chunking": plan.chunking,
        "bm25": BM25_PARAMETERS,
        "corpus_hash": corpus_hash(documents),
        "counts": {
            "documents": len(documents),
            "chunks": len(chunks),
            "kept": plan.kept_rows,
            "new": len(new_chunks),
            "segments": len(parts),
            "compacted": compacted,
        },
        "segments": [
            {"id": s.segment_id, "rows": s.rows, "live": int(m.sum()), "search": s.search}
            for s, m in parts
        ],
        "provenance": provenance or {},
    }
    stripped = [_without_text(document) for document in documents]
    release = repository.write_release(manifest, [mask for _, mask in parts], stripped)
    record = json.dumps({"release_id": release.release_id})
    write_atomically(build.folder / _RELEASE, lambda p: p.write_text(record, "utf-8"))
    return release


def publish_release(
    repository: IndexRepository,
    release: Release,
    backend: VectorBackend,
    retention: Retention,
    pointer: str = CURRENT,
) -> tuple[str | None, list[str]]:
    """Make ``release`` the one ``pointer`` names, if nothing moved it since the build planned.

    The backend must have prepared the release. Returns the release it replaced and the
    releases retention deleted.
    """
    previous = release.manifest["predecessor"]
    repository.move_pointer(release.release_id, expected=previous, name=pointer)
    backend.point(pointer, release.release_id)
    deleted = repository.apply_retention(retention, on_delete=backend.drop)
    return previous, deleted


def reembed_release(
    repository: IndexRepository,
    source: Release,
    embedder: Embedder,
    identity: str,
    progress: Progress | None = None,
    provenance: dict[str, Any] | None = None,
) -> tuple[Release, EmbeddingReport]:
    """The same chunks and keyword counts as ``source``, with vectors from another embedder:
    the candidate a new embedder is measured and promoted with. Nothing is reused from
    ``source``'s vectors, and no pointer moves."""
    started = time.perf_counter()
    live = list(source.live_rows())
    chunks = [segment.chunks[row] for segment, rows in live for row in rows]
    vectors = embedder.encode([chunk.indexed_text for chunk in chunks], progress)
    terms, counts = merge_term_counts(live)
    segment = _new_segment(repository, chunks, vectors, terms, counts)
    counts_before = source.manifest["counts"]
    manifest = {
        **{key: source.manifest[key] for key in ("chunking", "bm25", "corpus_hash")},
        "created_at": _now(),
        "predecessor": source.release_id,
        "base": None,
        "base_note": f"re-embedded from {source.release_id}: same chunks, new vectors",
        "reembedded_from": source.release_id,
        "build_id": f"reembed-{source.release_id}",
        "embedder": {
            "identity": identity,
            "model_id": embedder.model_id,
            "dimension": int(vectors.shape[1]) if len(vectors) else embedder.dimension,
        },
        "counts": {
            "documents": counts_before["documents"],
            "chunks": len(chunks),
            "kept": 0,
            "new": len(chunks),
            "segments": 1,
            "compacted": False,
        },
        "segments": [
            {
                "id": segment.segment_id,
                "rows": segment.rows,
                "live": segment.rows,
                "search": segment.search,
            }
        ],
        "provenance": provenance or {},
    }
    release = repository.write_release(
        manifest, [np.ones(segment.rows, dtype=bool)], source.documents
    )
    report = EmbeddingReport(len(chunks), 0, 0, time.perf_counter() - started)
    return release, report


def corpus_hash(documents: Sequence[Document]) -> str:
    """One digest of every document's id and content: equal corpora, equal hash."""
    digest = hashlib.sha256()
    for document in sorted(documents, key=lambda d: d.doc_id):
        digest.update(f"{document.doc_id}\x00{document.content_hash}\n".encode())
    return f"sha256:{digest.hexdigest()[:32]}"


def _usable_base(
    repository: IndexRepository, release_id: str | None, identity: str, reuse: bool
) -> tuple[Release | None, str]:
    if release_id is None:
        return None, "first release: everything is built"
    if not reuse:
        return None, "full rebuild requested: nothing is reused"
    try:
        base = repository.open(release_id)
    except CorruptIndexError as error:
        return None, f"current release {release_id} is unreadable, nothing reused: {error}"
    if base.embedder_identity != identity:
        return None, (
            f"embedder changed ({base.embedder_identity} -> {identity}): every chunk is re-embedded"
        )
    if base.manifest["bm25"] != BM25_PARAMETERS:
        return None, "keyword analysis changed: every chunk is re-indexed"
    return base, f"reusing unchanged rows of {release_id}"


def _base_rows(
    base: Release | None,
) -> tuple[dict[str, tuple[str, int, Chunk]], dict[str, tuple[str, int]]]:
    """Where each live base chunk is, by id and by embedded text."""
    located: dict[str, tuple[str, int, Chunk]] = {}
    by_text: dict[str, tuple[str, int]] = {}
    for segment, rows in base.live_rows() if base else []:
        for row in rows:
            chunk = segment.chunks[row]
            located[chunk.chunk_id] = (segment.segment_id, int(row), chunk)
            by_text.setdefault(_text_key(chunk), (segment.segment_id, int(row)))
    return located, by_text


def _text_key(chunk: Chunk) -> str:
    return hashlib.sha256(chunk.indexed_text.encode()).hexdigest()


def _needs_compaction(parts: Sequence[tuple[Segment, np.ndarray]]) -> bool:
    rows = sum(segment.rows for segment, _ in parts)
    live = sum(int(mask.sum()) for _, mask in parts)
    return len(parts) > MAX_SEGMENTS or (rows > 0 and (rows - live) / rows > MAX_DEAD_SHARE)


def _compact(
    repository: IndexRepository,
    parts: Sequence[tuple[Segment, np.ndarray]],
    questions: np.ndarray | None,
    log: Log,
) -> tuple[Segment, np.ndarray]:
    """One segment holding exactly the live rows: copies data, embeds nothing."""
    live = [(segment, np.flatnonzero(mask)) for segment, mask in parts]
    chunks = [segment.chunks[row] for segment, rows in live for row in rows]
    vectors = np.concatenate([np.asarray(segment.vectors.vectors[rows]) for segment, rows in live])
    terms, counts = merge_term_counts(live)
    segment = _new_segment(repository, chunks, vectors, terms, counts, questions, log)
    return segment, np.ones(segment.rows, dtype=bool)


def _new_segment(
    repository: IndexRepository,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    terms: Sequence[str],
    counts: sp.csr_matrix,
    questions: np.ndarray | None = None,
    log: Log = lambda _: None,
) -> Segment:
    """A segment in ``repository``, its vectors indexed as the repository's policy says."""
    return write_segment(
        repository.segments_dir,
        chunks,
        vectors,
        terms,
        counts,
        repository.vector_policy,
        questions,
        log,
    )


def _base_dimension(base: Release | None) -> int | None:
    return base.manifest["embedder"]["dimension"] if base else None


def _without_text(document: Document) -> Document:
    return replace(document, text="")


def _write_with(path: Path, save: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Save through an open file: given a path, NumPy and SciPy append their suffix to it."""
    with path.open("wb") as file:
        save(file, *args, **kwargs)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
