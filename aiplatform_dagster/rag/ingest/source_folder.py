"""Snapshots of a document folder, so a sensor can tell what was added, changed or removed."""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.ingest.documents import (
    DocumentError,
    doc_id_for,
    iter_candidate_files,
    read_document,
)

Snapshot = dict[str, str]
"""doc id -> a fingerprint of the file (modification time and size)."""


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What differs between two snapshots of the same folder."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed"


def snapshot_folder(folder: Path) -> Snapshot:
    """Fingerprint every candidate file without reading its contents (cheap on every tick)."""
    snapshot: Snapshot = {}
    for path in iter_candidate_files(folder):
        try:
            stat = path.stat()
        except OSError:
            snapshot[doc_id_for(folder, path)] = "unreadable"
            continue
        snapshot[doc_id_for(folder, path)] = f"{stat.st_mtime_ns}:{stat.st_size}"
    return snapshot


def snapshot_digest(snapshot: Snapshot) -> str:
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()


class SnapshotStore:
    """Snapshots kept as files named by their digest, so a sensor's cursor holds a digest, not
    an entry per file: Dagster stores the cursor with every tick, twice a minute."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, snapshot: Snapshot) -> str:
        """Store ``snapshot`` (once per distinct state) and return its digest."""
        digest = snapshot_digest(snapshot)
        path = self.root / f"{digest}.json"
        if not path.exists():
            text = json.dumps(snapshot, sort_keys=True)
            write_atomically(path, lambda pending: pending.write_text(text, "utf-8"))
        return digest

    def load(self, digest: str | None) -> Snapshot | None:
        """The snapshot stored under ``digest`` ({} for None); None when its file is gone or
        unreadable (the storage folder was replaced), so the caller knows it knows nothing."""
        if digest is None:
            return {}
        try:
            return json.loads((self.root / f"{digest}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def keep(self, digests: Iterable[str]) -> None:
        """Delete every stored snapshot but ``digests``."""
        wanted = {f"{digest}.json" for digest in digests}
        for path in self.root.glob("*.json"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)


def diff_snapshots(previous: Snapshot, current: Snapshot) -> FolderChanges:
    """Files added, changed or removed since ``previous``, each list sorted."""
    return FolderChanges(
        added=tuple(sorted(current.keys() - previous.keys())),
        changed=tuple(
            sorted(k for k in current.keys() & previous.keys() if current[k] != previous[k])
        ),
        removed=tuple(sorted(previous.keys() - current.keys())),
    )


def already_ingested(
    folder: Path,
    changes: FolderChanges,
    current: Snapshot,
    held: Mapping[str, str],
    max_file_bytes: int,
) -> bool:
    """Whether a release holding ``held`` (doc id -> content hash) already has the folder as it
    is now although its snapshot changed: a run started from the UI ingested it, or files were
    touched without an edit.

    Only the changed files are read (as ingestion reads them: a file it would skip must not be
    held); files the snapshot did not see change are taken to be held as they were.
    """
    if not held.keys() <= current.keys() or any(doc_id in held for doc_id in changes.removed):
        return False
    for doc_id in current.keys() - held.keys() - {*changes.added, *changes.changed}:
        if _ingestible(folder, doc_id, max_file_bytes):
            return False
    for doc_id in (*changes.added, *changes.changed):
        try:
            document = read_document(folder, folder / doc_id, max_file_bytes)
        except DocumentError:
            if doc_id in held:
                return False
            continue
        if held.get(doc_id) != document.content_hash:
            return False
    return True


def _ingestible(folder: Path, doc_id: str, max_file_bytes: int) -> bool:
    try:
        read_document(folder, folder / doc_id, max_file_bytes)
    except DocumentError:
        return False
    return True
