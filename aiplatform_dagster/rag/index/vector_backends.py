"""Where a release's vectors are searched: the embedded index in its segments, or a server.

A backend mirrors the repository's releases: ``prepare`` makes a release searchable before any
pointer names it, ``point`` mirrors a pointer move (a Weaviate collection alias), ``drop``
follows retention, and ``open`` gives the read-only view one release's readers search.
"""

from typing import TYPE_CHECKING, Protocol

from aiplatform_dagster.rag.index.vector_store import VectorStore

if TYPE_CHECKING:
    from aiplatform_dagster.rag.index.releases import Release


class VectorBackend(Protocol):
    name: str

    def prepare(self, release: "Release") -> None: ...

    def open(self, release: "Release") -> VectorStore: ...

    def point(self, pointer: str, release_id: str) -> None: ...

    def drop(self, release_id: str) -> None: ...


class EmbeddedBackend:
    """The default: the vectors are already in the release's segments, nothing to do."""

    name = "embedded"

    def prepare(self, release: "Release") -> None:
        release.vectors.count()

    def open(self, release: "Release") -> VectorStore:
        return release.vectors

    def point(self, pointer: str, release_id: str) -> None:
        return None

    def drop(self, release_id: str) -> None:
        return None
