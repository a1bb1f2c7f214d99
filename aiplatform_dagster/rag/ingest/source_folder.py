"""Snapshots of a document folder, so a sensor can tell what was added, changed or removed."""

from dataclasses import dataclass
from pathlib import Path

from aiplatform_dagster.rag.ingest.documents import doc_id_for, iter_candidate_files

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


def diff_snapshots(previous: Snapshot, current: Snapshot) -> FolderChanges:
    """Files added, changed or removed since ``previous``, each list sorted."""
    return FolderChanges(
        added=tuple(sorted(current.keys() - previous.keys())),
        changed=tuple(
            sorted(k for k in current.keys() & previous.keys() if current[k] != previous[k])
        ),
        removed=tuple(sorted(previous.keys() - current.keys())),
    )
