"""Segments: immutable, content-addressed sets of chunks with their vectors and term counts.

A release is a list of segments plus, per segment, which rows it still holds. A new release
writes one segment for the chunks that changed and shares every other segment with its
predecessor, so a release that changes 1% of the documents costs about 1% of a full build.

A segment folder is written under a scratch name, fsynced, then renamed to its content hash:
a crash leaves only scratch, and two writers of the same content end with one folder.
"""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.index.approximate import DEFAULT_POLICY, ApproximatePolicy, Log
from aiplatform_dagster.rag.index.atomic import fsync
from aiplatform_dagster.rag.index.text_analysis import ANALYZER_VERSION
from aiplatform_dagster.rag.index.vector_store import (
    Snapshot,
    open_vector_part,
    write_vector_part,
)
from aiplatform_dagster.rag.ingest.chunking import Chunk

FORMAT_VERSION = 1
SEGMENT_FILE = "segment.json"
CHUNKS_FILE = "chunks.parquet"
TERMS_FILE = "terms.json"
COUNTS_FILE = "counts.npz"


class CorruptIndexError(PlatformError):
    """A stored index file is missing, truncated or unreadable; the message names it."""


def corrupt(path: Path, problem: str) -> CorruptIndexError:
    """The error for a damaged file, with what the user should do about it."""
    return CorruptIndexError(
        f"{path}: {problem}. The release that holds it cannot be opened; readers stay on the "
        "release they have. Build a new release (materialise the ingestion group, or "
        "`make ingest`); it will not reuse data from this one."
    )


def read_json(path: Path) -> Any:
    """A JSON file of the index, or the error that names it."""
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError as error:
        raise corrupt(path, "missing (its folder is incomplete)") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt(path, f"unreadable ({error})") from error


def verify_sizes(folder: Path, files: dict[str, int]) -> None:
    """Every file present with the size it was written with: catches truncation cheaply."""
    for name, size in files.items():
        path = folder / name
        try:
            found = os.stat(path).st_size
        except FileNotFoundError as error:
            raise corrupt(path, "missing") from error
        if found != size:
            raise corrupt(path, f"{found} bytes, written as {size} (truncated or replaced)")


def write_records(path: Path, records: Sequence[Any], record_type: type) -> None:
    """Dataclass records as a Parquet table (an empty table keeps the columns)."""
    names = [f.name for f in fields(record_type)]
    rows = [asdict(record) for record in records]
    table = pa.Table.from_pylist(rows) if rows else pa.table({name: [] for name in names})
    pq.write_table(table, path)


def read_records(path: Path, record_type: type) -> list[Any]:
    try:
        return [record_type(**row) for row in pq.read_table(path).to_pylist()]
    except (OSError, pa.ArrowException, TypeError) as error:
        raise corrupt(path, f"unreadable ({error})") from error


def segment_id(chunks: Sequence[Chunk], vectors: np.ndarray) -> str:
    """Content hash of the rows: equal content, equal id, one folder."""
    digest = hashlib.sha256(json.dumps([asdict(c) for c in chunks], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()[:24]


def write_segment(
    segments_dir: Path,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    terms: Sequence[str],
    counts: sp.csr_matrix,
    policy: ApproximatePolicy = DEFAULT_POLICY,
    questions: np.ndarray | None = None,
    log: Log = lambda _: None,
) -> "Segment":
    """Write a segment (or find the identical one already written) and return it opened.

    ``policy`` decides whether its vectors get an approximate index, tuned on ``questions``
    (see ``write_vector_part``); a segment already written with the same content keeps the
    index it was written with."""
    if len(chunks) != len(vectors) or counts.shape[1] != len(chunks):
        raise ValueError(
            f"segment rows disagree: {len(chunks)} chunks, {len(vectors)} vectors, "
            f"{counts.shape[1]} term-count columns"
        )
    identifier = segment_id(chunks, vectors)
    target = Path(segments_dir) / identifier
    if target.exists():
        try:
            return Segment(target)
        except CorruptIndexError:  # damaged copy of this content: set it aside, write anew
            target.rename(target.with_name(f".{identifier}.{uuid.uuid4().hex}.corrupt"))
    scratch = target.with_name(f".{identifier}.{uuid.uuid4().hex}.tmp")
    scratch.mkdir(parents=True)
    try:
        write_records(scratch / CHUNKS_FILE, chunks, Chunk)
        vector_meta = write_vector_part(
            scratch, [c.chunk_id for c in chunks], vectors, policy, questions, log=log
        )
        (scratch / TERMS_FILE).write_text(json.dumps(list(terms), ensure_ascii=False), "utf-8")
        sp.save_npz(scratch / COUNTS_FILE, sp.csr_matrix(counts), compressed=True)
        for path in scratch.iterdir():
            fsync(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "segment_id": identifier,
            "rows": len(chunks),
            "vectors": vector_meta,
            "analyzer": ANALYZER_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {path.name: path.stat().st_size for path in sorted(scratch.iterdir())},
        }
        (scratch / SEGMENT_FILE).write_text(json.dumps(meta, indent=1), "utf-8")
        fsync(scratch / SEGMENT_FILE)
        fsync(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(scratch, ignore_errors=True)  # another writer made the same segment
        fsync(target.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Segment(target)


def merge_term_counts(
    parts: Iterable[tuple["Segment", np.ndarray]],
) -> tuple[list[str], sp.csr_matrix]:
    """One vocabulary and one (terms, rows) count matrix over the given rows of each segment,
    rows in the order given: what a release's BM25 and a compaction both need."""
    vocabulary: dict[str, int] = {}
    term_rows, doc_cols, values = [], [], []
    column = 0
    for segment, rows in parts:
        local = np.fromiter(
            (vocabulary.setdefault(t, len(vocabulary)) for t in segment.terms),
            np.int64,
            len(segment.terms),
        )
        block = segment.counts[:, rows].tocoo()
        term_rows.append(local[block.row])
        doc_cols.append(block.col + column)
        values.append(block.data)
        column += len(rows)
    counts = sp.coo_matrix(
        (_concat(values, float), (_concat(term_rows, int), _concat(doc_cols, int))),
        shape=(len(vocabulary), column),
    ).tocsr()
    return list(vocabulary), counts


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)


@dataclass(frozen=True)
class Segment:
    """An opened segment; reading its parts is lazy, checking its files is not."""

    folder: Path

    def __post_init__(self) -> None:
        self.verify()

    @cached_property
    def meta(self) -> dict[str, Any]:
        path = self.folder / SEGMENT_FILE
        meta = read_json(path)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise corrupt(path, f"format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        return meta

    def verify(self) -> None:
        verify_sizes(self.folder, self.meta["files"])

    @property
    def segment_id(self) -> str:
        return self.meta["segment_id"]

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @property
    def ivf(self) -> dict[str, Any] | None:
        """What its IVF index measured when written (nprobe, recall); None: searched exactly."""
        summary = self.meta["vectors"].get("approximate", {})
        return summary if summary.get("used") else None

    @property
    def search(self) -> str:
        """How its vectors are searched: exactly, or by IVF with the recall measured at write."""
        if self.ivf is None:
            return "exact"
        return (
            f"ivf nprobe {self.ivf['nprobe']}/{self.ivf['nlist']}, "
            f"recall@10 {self.ivf['recall_at_10']:.3f}"
        )

    @property
    def analyzer(self) -> str:
        return self.meta["analyzer"]

    @cached_property
    def chunks(self) -> list[Chunk]:
        return read_records(self.folder / CHUNKS_FILE, Chunk)

    @cached_property
    def vectors(self) -> Snapshot:
        try:
            return open_vector_part(
                self.folder, [c.chunk_id for c in self.chunks], self.meta["vectors"]
            )
        except (OSError, ValueError, RuntimeError) as error:
            raise corrupt(self.folder / "vectors.npy", f"unreadable ({error})") from error

    @cached_property
    def terms(self) -> list[str]:
        return read_json(self.folder / TERMS_FILE)

    @cached_property
    def counts(self) -> sp.csr_matrix:
        """Term frequencies, (terms, rows)."""
        path = self.folder / COUNTS_FILE
        try:
            return sp.load_npz(path).tocsr()
        except (OSError, ValueError, EOFError, KeyError) as error:
            raise corrupt(path, f"unreadable ({error})") from error
