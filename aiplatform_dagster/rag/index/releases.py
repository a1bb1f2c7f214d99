"""Index releases: immutable, checked snapshots of the indexes, and the named pointers to them.

Layout of a repository (``storage/ingestion`` by default):
    segments/<id>/          shared, content-addressed chunks + vectors + term counts
    releases/<id>/          manifest.json, documents.parquet, live.npz (rows each segment keeps)
    pointers/<name>.json    which release ``current`` (or ``candidate``, ...) names
    builds/<build id>/      staging of a build in progress (see ``rag/index/build.py``)
    writer.lock             serialises pointer moves and retention across processes

A release folder is complete before it is renamed into place and never changes afterwards. A
pointer moves by an atomic rename, under the writer lock and only if it still names the
release the build started from, so two writers never lose each other's work silently. Readers
open one release and keep it for their life; ``ReleaseReader`` re-reads the pointer to move on.
"""

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.index.approximate import DEFAULT_POLICY, ApproximatePolicy
from aiplatform_dagster.rag.index.atomic import fsync, write_atomically
from aiplatform_dagster.rag.index.bm25 import BM25Index
from aiplatform_dagster.rag.index.lock import writer_lock
from aiplatform_dagster.rag.index.segments import (
    CorruptIndexError,
    Segment,
    corrupt,
    merge_term_counts,
    read_json,
    read_records,
    verify_sizes,
    write_records,
)
from aiplatform_dagster.rag.index.text_analysis import ANALYZER_VERSION
from aiplatform_dagster.rag.index.vector_store import EmbeddedVectorIndex, LivePart
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.ingest.documents import Document

FORMAT_VERSION = 1
CURRENT = "current"
CANDIDATE = "candidate"
"""Names the release a challenger embedder built, beside the one queries read."""
ROLLBACK = "rollback"
"""Names what ``current`` named before the last embedder promotion: where a rollback returns."""
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.parquet"
LIVE_FILE = "live.npz"
_OPEN_ATTEMPTS = 5
SEGMENT_GRACE = timedelta(hours=1)
"""Unreferenced segments younger than this may belong to a build about to write its release."""
BUILD_GRACE = timedelta(days=1)


class ReleaseError(PlatformError):
    """A release or pointer operation that cannot go ahead; the message says why and what to do."""


class EmbedderMismatch(ReleaseError):
    """The query embedder is not the one that built the release's vectors."""


@dataclass(frozen=True)
class Retention:
    """Keep the newest ``keep`` releases and any younger than ``keep_days``; never a pointed one."""

    keep: int = 5
    keep_days: float = 7.0


class Release:
    """One opened release. Parts load on first use and stay loaded; nothing here ever changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder / MANIFEST_FILE)
        segments_dir = self.folder.parent.parent / "segments"
        self.segments = [Segment(segments_dir / s["id"]) for s in self.manifest["segments"]]
        self._live = _read_live(self.folder / LIVE_FILE, self.segments)

    @property
    def release_id(self) -> str:
        return self.manifest["release_id"]

    @property
    def embedder_identity(self) -> str:
        return self.manifest["embedder"]["identity"]

    def check_embedder(self, identity: str, model_id: str) -> None:
        """Refuse a query embedder other than the one that built the vectors."""
        built = self.manifest["embedder"]
        if identity != built["identity"]:
            raise EmbedderMismatch(
                f"index release {self.release_id} was built with embedder {built['model_id']} "
                f"(identity {built['identity']}), but queries would use {model_id} (identity "
                f"{identity}). Configure the embedder that built it (AIPLATFORM_EMBEDDING_MODEL) "
                "or build a release with this one (materialise the ingestion group)."
            )

    def live_rows(self) -> Iterator[tuple[Segment, np.ndarray]]:
        """Each segment with the row numbers this release keeps, in release order."""
        for segment, live in zip(self.segments, self._live, strict=True):
            yield segment, np.flatnonzero(live)

    @cached_property
    def chunks(self) -> list[Chunk]:
        return [segment.chunks[row] for segment, rows in self.live_rows() for row in rows]

    @cached_property
    def chunk_index(self) -> dict[str, Chunk]:
        return {chunk.chunk_id: chunk for chunk in self.chunks}

    @cached_property
    def documents(self) -> list[Document]:
        """The documents the release was built from (text left out: chunks hold it)."""
        return read_records(self.folder / DOCUMENTS_FILE, Document)

    @cached_property
    def bm25(self) -> BM25Index:
        """The keyword index over the live rows, combined from the segments' term counts."""
        bm25 = self.manifest["bm25"]
        if bm25["analyzer"] != ANALYZER_VERSION:
            raise ReleaseError(
                f"index release {self.release_id} counted its keywords with analyzer "
                f"{bm25['analyzer']}, but this code analyses queries with {ANALYZER_VERSION}: "
                "build a new release (materialise the ingestion group, or `make ingest`)"
            )
        for segment in self.segments:
            if segment.analyzer != bm25["analyzer"]:
                raise corrupt(segment.folder, "analysed with another analyzer than its release")
        vocabulary, counts = merge_term_counts(self.live_rows())
        return BM25Index.from_counts(
            [chunk.chunk_id for chunk in self.chunks],
            vocabulary,
            counts,
            k1=bm25["k1"],
            b=bm25["b"],
            idf=bm25["idf"],
        )

    @cached_property
    def vectors(self) -> EmbeddedVectorIndex:
        """Search over the live rows of the segments' vectors (exact, or IVF per segment)."""
        return EmbeddedVectorIndex(
            [
                LivePart(segment.vectors, None if live.all() else live)
                for segment, live in zip(self.segments, self._live, strict=True)
            ]
        )

    def vector_recall(self) -> float | None:
        """The lowest recall@10 measured for a segment's IVF index; None when all are exact."""
        measured = [s.ivf["recall_at_10"] for s in self.segments if s.ivf is not None]
        return min(measured) if measured else None

    def live_vectors(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """(chunk ids, float32 vectors) per segment: what a server backend uploads."""
        for segment, rows in self.live_rows():
            snapshot = segment.vectors
            yield [snapshot.ids[row] for row in rows], np.asarray(snapshot.vectors[rows])

    def load(self) -> "Release":
        """Read every part now, so a broken release fails here rather than on a query."""
        _ = self.chunk_index, self.bm25, self.vectors, self.documents
        return self


class IndexRepository:
    """The releases of one corpus, their shared segments and their named pointers."""

    def __init__(
        self,
        root: Path,
        lock_timeout_s: float = 600.0,
        vector_policy: ApproximatePolicy = DEFAULT_POLICY,
    ) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self.vector_policy = vector_policy

    @property
    def segments_dir(self) -> Path:
        return self.root / "segments"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    def writer_lock(self, purpose: str) -> Any:
        return writer_lock(self.root / "writer.lock", self.lock_timeout_s, purpose)

    def pointer(self, name: str = CURRENT) -> str | None:
        """The release id a pointer names, or None if it was never set."""
        path = self._pointer_path(name)
        try:
            return json.loads(path.read_text("utf-8"))["release"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise corrupt(path, f"unreadable pointer ({error}); set it again") from error

    def pointers(self) -> dict[str, str]:
        names = sorted(p.stem for p in (self.root / "pointers").glob("*.json"))
        return {name: release for name in names if (release := self.pointer(name))}

    def open(self, release_id: str) -> Release:
        folder = self.releases_dir / release_id
        if not folder.is_dir():
            raise ReleaseError(
                f"no index release {release_id!r} under {self.releases_dir}; "
                f"known: {self.release_ids()[-5:]}"
            )
        return Release(folder)

    def open_pointer(self, name: str = CURRENT) -> Release:
        """The release a pointer names, fully loaded, so later deletions cannot touch it.

        A writer may move the pointer and retention delete the old release between reading
        the pointer and loading it: then the pointer is read again. A release that fails to
        load while the pointer still names it is reported, never skipped.
        """
        for _ in range(_OPEN_ATTEMPTS):
            release_id = self.pointer(name)
            if release_id is None:
                raise ReleaseError(
                    f"no index release is {name!r} under {self.root}: build one first "
                    "(`make ingest`, or materialise the ingestion group in the Dagster UI)"
                )
            try:
                return self.open(release_id).load()
            except (ReleaseError, CorruptIndexError):
                if self.pointer(name) == release_id:
                    raise
        raise ReleaseError(f"{name!r} under {self.root} moved {_OPEN_ATTEMPTS} times while opening")

    def release_ids(self) -> list[str]:
        """Every complete release, oldest first (ids sort by creation time)."""
        if not self.releases_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.releases_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def write_release(
        self,
        manifest: dict[str, Any],
        live: Sequence[np.ndarray],
        documents: Sequence[Document],
    ) -> Release:
        """Write a complete release folder under a new id, then rename it into place."""
        release_id = new_release_id()
        manifest = {**manifest, "format_version": FORMAT_VERSION, "release_id": release_id}
        self.releases_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.releases_dir / f".{release_id}.tmp"
        scratch.mkdir()
        try:
            write_records(scratch / DOCUMENTS_FILE, documents, Document)
            np.savez_compressed(
                scratch / LIVE_FILE,
                **{s["id"]: mask for s, mask in zip(manifest["segments"], live, strict=True)},
            )
            manifest["files"] = {
                name: (scratch / name).stat().st_size for name in (DOCUMENTS_FILE, LIVE_FILE)
            }
            (scratch / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), "utf-8")
            for path in scratch.iterdir():
                fsync(path)
            fsync(scratch)
            scratch.rename(self.releases_dir / release_id)
            fsync(self.releases_dir)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return self.open(release_id)

    def move_pointer(self, release_id: str, expected: str | None, name: str = CURRENT) -> None:
        """Point ``name`` at ``release_id`` if it still names ``expected`` (None: unset).

        Every move is a compare-and-swap: a build publishes only over the release it started
        from, and a rollback only over the release its caller saw.
        """
        with self.writer_lock(f"move {name} to {release_id}"):
            self.open(release_id)  # exists and is readable
            previous = self.pointer(name)
            if previous != expected:
                raise ReleaseError(
                    f"{name!r} moved from {expected} to {previous} while release {release_id} "
                    "was being built from it; nothing was published. Run the build again so it "
                    "starts from the new release."
                )
            self._write_pointer(name, release_id, previous)

    def clear_pointer(self, name: str, expected: str) -> None:
        """Remove pointer ``name`` if it still names ``expected``; retention may then delete the
        release it held."""
        with self.writer_lock(f"clear {name}"):
            previous = self.pointer(name)
            if previous != expected:
                raise ReleaseError(
                    f"{name!r} names {previous}, not {expected}: someone moved it; nothing "
                    "was cleared"
                )
            self._pointer_path(name).unlink()

    def apply_retention(
        self, retention: Retention, on_delete: Callable[[str], None] | None = None
    ) -> list[str]:
        """Delete releases outside the rule and no pointer names, then unreferenced segments."""
        with self.writer_lock("retention"):
            pointed = set(self.pointers().values())
            ids = self.release_ids()
            newest = set(ids[-retention.keep :]) if retention.keep > 0 else set()
            cutoff = datetime.now(UTC) - timedelta(days=retention.keep_days)
            doomed = [
                release_id
                for release_id in ids
                if release_id not in pointed
                and release_id not in newest
                and _created_at(release_id) < cutoff
            ]
            for release_id in doomed:
                if on_delete is not None:
                    on_delete(release_id)
                _remove(self.releases_dir / release_id)
            self._collect_segments()
            self._collect_builds()
            return doomed

    def _collect_segments(self) -> None:
        referenced: set[str] = set()
        for release_id in self.release_ids():
            try:
                manifest = _read_manifest(self.releases_dir / release_id / MANIFEST_FILE)
            except CorruptIndexError:
                continue  # a corrupt release keeps nothing alive
            referenced.update(s["id"] for s in manifest["segments"])
        if not self.segments_dir.is_dir():
            return
        young = time.time() - SEGMENT_GRACE.total_seconds()
        for folder in self.segments_dir.iterdir():
            if folder.name not in referenced and folder.stat().st_mtime < young:
                _remove(folder)

    def _collect_builds(self) -> None:
        """Builds nobody finished (a failed run) are removed after a day."""
        if not self.builds_dir.is_dir():
            return
        old = time.time() - BUILD_GRACE.total_seconds()
        for folder in self.builds_dir.iterdir():
            if folder.stat().st_mtime < old:
                shutil.rmtree(folder, ignore_errors=True)

    def _pointer_path(self, name: str) -> Path:
        if not name.isidentifier():
            raise ValueError(f"pointer names are identifiers like 'current', got {name!r}")
        return self.root / "pointers" / f"{name}.json"

    def _write_pointer(self, name: str, release_id: str, previous: str | None) -> None:
        record = {
            "release": release_id,
            "previous": previous,
            "moved_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        text = json.dumps(record)
        write_atomically(
            self._pointer_path(name), lambda pending: pending.write_text(text, "utf-8")
        )


def new_release_id(prefix: str = "r") -> str:
    """Sortable by creation time, unique across writers: r20261203T101500123-1a2b3c."""
    now = datetime.now(UTC)
    return f"{prefix}{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}-{uuid.uuid4().hex[:6]}"


def _created_at(release_id: str) -> datetime:
    return datetime.strptime(release_id[1:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise corrupt(path, f"not a release manifest of format {FORMAT_VERSION}")
    verify_sizes(path.parent, manifest.get("files", {}))
    return manifest


def _read_live(path: Path, segments: Sequence[Segment]) -> list[np.ndarray]:
    try:
        with np.load(path) as stored:
            masks = [stored[segment.segment_id] for segment in segments]
    except (OSError, ValueError, KeyError) as error:
        raise corrupt(path, f"unreadable ({error})") from error
    for segment, mask in zip(segments, masks, strict=True):
        if mask.shape != (segment.rows,):
            raise corrupt(path, f"mask of segment {segment.segment_id} has the wrong length")
    return [mask.astype(bool) for mask in masks]


def _remove(folder: Path) -> None:
    """Rename first, so a half-deleted folder is never mistaken for a complete one."""
    doomed = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.deleting")
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
