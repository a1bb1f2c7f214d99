"""Embedding a build's new rows: on one machine, or in shards on as many machines as shards.

A shard holds the documents whose id hashes to it, so all of a document's chunks land in one
shard and a rerun of a shard embeds the same rows. Each shard writes one file,
``shards/<shard>.npz``, into the folder of the build that planned the rows (written
atomically, one file per shard, so parallel writers on a shared volume never touch the same
file). ``embed_build`` then takes every vector a shard wrote for its plan and embeds only the
rows that no shard and no base release covered: a failed or skipped shard costs time, never
correctness.
"""

import hashlib
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiplatform_dagster.models.embedders import Embedder, Progress
from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.index.build import Build, BuildError, EmbeddingReport, Plan
from aiplatform_dagster.rag.index.segments import CorruptIndexError

SHARDS_DIR = "shards"
_KEY = re.compile(r"^(\d{3})-of-(\d{3})$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``count`` at most 999)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 < self.count < 1000 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= index < count < 1000")

    @property
    def key(self) -> str:
        """The Dagster partition key and file name: ``003-of-016``."""
        return f"{self.index:03d}-of-{self.count:03d}"

    @classmethod
    def parse(cls, key: str) -> "Shard":
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"shard keys look like 003-of-016, got {key!r}")
        return cls(int(match[1]), int(match[2]))

    def holds(self, doc_id: str) -> bool:
        return shard_of(doc_id, self.count) == self.index


@dataclass(frozen=True)
class ShardReport:
    shard: Shard
    plan_build: str
    """The build that planned the rows (the ``document_chunks`` run)."""
    rows: int
    documents: int
    seconds: float


def shard_keys(count: int) -> list[str]:
    return [Shard(index, count).key for index in range(count)]


def shard_of(doc_id: str, count: int) -> int:
    """The shard of a document: a hash that no process or Python version changes (Python's
    ``hash`` of a string differs between processes)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def embed_build(
    build: Build,
    embedder: Embedder,
    identity: str,
    progress: Progress | None = None,
    questions: Sequence[str] = (),
) -> EmbeddingReport:
    """Vectors for the new segment's rows: copied where the text is unchanged, taken from the
    shards where they embedded it, else embedded here.

    When the release is large enough for an approximate index, ``questions`` (real questions,
    e.g. the judged ones the serving smoke test asks) are embedded too: its recall is measured
    on them."""
    plan = build.plan()
    _check_identity(plan, identity, build.build_id)
    chunks = build.chunks()
    started = time.perf_counter()
    rows = [chunks[position] for position in plan.new_rows]
    base = build.repository.open(plan.base) if plan.base else None
    segments = {segment.segment_id: segment for segment in base.segments} if base else {}
    vectors = np.zeros((len(rows), embedder.dimension), dtype=np.float32)
    for row, (segment_id, source_row) in plan.copied.items():
        vectors[row] = segments[segment_id].vectors.vectors[source_row]
    sharded = {row: v for row, v in shard_vectors(build, plan).items() if row not in plan.copied}
    for row, vector in sharded.items():
        vectors[row] = vector
    missing = [row for row in range(len(rows)) if row not in plan.copied and row not in sharded]
    if missing:
        vectors[missing] = embedder.encode([rows[i].indexed_text for i in missing], progress)
    build.write_new_vectors(vectors)
    if questions and len(chunks) >= build.repository.vector_policy.min_rows:
        build.write_questions(embedder.encode(list(questions)))
    return EmbeddingReport(
        computed=len(missing),
        copied=len(plan.copied),
        kept=plan.kept_rows,
        seconds=time.perf_counter() - started,
        from_shards=len(sharded),
    )


def embed_shard(
    build: Build,
    shard: Shard,
    embedder: Embedder,
    identity: str,
    progress: Progress | None = None,
) -> ShardReport:
    """Embed the plan's new rows that belong to ``shard`` and store them in the plan's build.

    Rows whose vector the plan copies from the base release are left to ``embed_build``."""
    plan = build.plan()
    _check_identity(plan, identity, build.build_id)
    chunks = build.chunks()
    rows = [
        row
        for row, position in enumerate(plan.new_rows)
        if row not in plan.copied and shard.holds(chunks[position].doc_id)
    ]
    started = time.perf_counter()
    texts = [chunks[plan.new_rows[row]].indexed_text for row in rows]
    vectors = (
        embedder.encode(texts, progress)
        if texts
        else np.zeros((0, embedder.dimension), dtype=np.float32)
    )
    target = _shards_folder(build, plan) / f"{shard.key}.npz"
    write_atomically(target, lambda path: _save(path, rows, vectors, identity))
    return ShardReport(
        shard=shard,
        plan_build=plan.build_id,
        rows=len(rows),
        documents=len({chunks[plan.new_rows[row]].doc_id for row in rows}),
        seconds=time.perf_counter() - started,
    )


def shard_vectors(build: Build, plan: Plan) -> dict[int, np.ndarray]:
    """New-row index -> vector, from every shard written for ``plan`` (empty when none was).

    A shard embedded with another model than the plan's is refused: its vectors would not
    be comparable with the rest of the release."""
    folder = _shards_folder(build, plan)
    vectors: dict[int, np.ndarray] = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        rows, embedded, identity = _load(path)
        _check_identity(plan, identity, f"{plan.build_id} (shard {path.stem})")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(plan.new_rows)):
            raise CorruptIndexError(f"{path}: rows outside the plan's {len(plan.new_rows)}")
        vectors.update(zip(rows.tolist(), embedded, strict=True))
    return vectors


def _check_identity(plan: Plan, identity: str, where: str) -> None:
    if identity != plan.embedder_identity:
        raise BuildError(
            f"build {where} was planned for embedder {plan.embedder_identity} but "
            f"would embed with {identity}: run document_chunks again with this embedder"
        )


def _shards_folder(build: Build, plan: Plan) -> Path:
    """Shards live in the build that planned: every run that links its plan finds them."""
    return Build(build.repository, plan.build_id).folder / SHARDS_DIR


def _save(path: Path, rows: list[int], vectors: np.ndarray, identity: str) -> None:
    with path.open("wb") as file:
        np.savez(
            file,
            rows=np.asarray(rows, dtype=np.int64),
            vectors=vectors.astype(np.float32),
            identity=np.asarray(identity),
        )


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        with np.load(path, allow_pickle=False) as data:
            rows, vectors, identity = data["rows"], data["vectors"], str(data["identity"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise CorruptIndexError(f"{path}: unreadable shard ({error})") from error
    if rows.ndim != 1 or vectors.ndim != 2 or len(rows) != len(vectors):
        raise CorruptIndexError(f"{path}: {len(rows)} rows but {len(vectors)} vectors")
    return rows, vectors, identity
