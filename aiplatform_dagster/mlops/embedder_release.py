"""An embedder and the index release its vectors are in move together: promotion, rollback and
the repair of a move a crash interrupted.

The ``current`` pointer is the commit point. Queries and incremental builds use the embedder
version that built the release ``current`` names (``registered_embedder`` finds it by the
identity tag), never whatever an alias says, so the query path is consistent at every instant.
The pointer moves first, the aliases follow; a crash between the two leaves ``champion`` behind
the pointer, and ``reconcile_champion`` (the gate runs it first, every time) moves it to the
version the release names. Nothing else ever has to be undone.
"""

from dataclasses import dataclass

from aiplatform_dagster.mlops.registry import (
    CHAMPION,
    IDENTITY_TAG,
    PRODUCTION,
    AliasMove,
    ModelRegistry,
    MoveKind,
    RegistryError,
)
from aiplatform_dagster.rag.index.releases import (
    CURRENT,
    ROLLBACK,
    IndexRepository,
    ReleaseError,
)
from aiplatform_dagster.rag.index.vector_backends import VectorBackend

SERVED = (CHAMPION, PRODUCTION)


@dataclass(frozen=True)
class ReleaseMove:
    """What one promotion or rollback did to the pointer and to the aliases."""

    release_id: str
    replaced_release: str | None
    moves: list[AliasMove]


def promote_with_release(
    repository: IndexRepository,
    backend: VectorBackend,
    registry: ModelRegistry,
    name: str,
    version: str,
    candidate_id: str,
    reason: str,
    by: str,
) -> ReleaseMove:
    """Serve ``candidate_id`` (re-embedded by ``version``) and make ``version`` champion.

    Refused when ``current`` moved on since the candidate was built: promoting it would drop
    the documents ingested since. ``rollback`` keeps the replaced release for ``rollback``.
    """
    candidate = repository.open(candidate_id)
    source = candidate.manifest.get("reembedded_from")
    current = repository.pointer(CURRENT)
    if source is None or current != source:
        raise ReleaseError(
            f"candidate {candidate_id} was built from {source}, but current is now {current}: "
            "it lacks what was ingested since. Materialise candidate_release again, then the gate."
        )
    repository.move_pointer(current, expected=repository.pointer(ROLLBACK), name=ROLLBACK)
    repository.move_pointer(candidate_id, expected=current, name=CURRENT)
    backend.point(CURRENT, candidate_id)
    moves = registry.promote(name, version, reason, by)
    return ReleaseMove(candidate_id, current, moves)


def rollback_with_release(
    repository: IndexRepository,
    backend: VectorBackend,
    registry: ModelRegistry,
    name: str,
    reason: str,
    by: str,
) -> ReleaseMove:
    """``current`` back to the release the last promotion replaced, and ``champion`` back to
    the version that built it. Documents ingested since are not in that release: the next
    ingestion run adds them, with that embedder."""
    target = repository.pointer(ROLLBACK)
    if target is None:
        raise RegistryError(
            f"no release to roll {name} back to: no embedder promotion replaced one (or it was "
            "already rolled back)"
        )
    release = repository.open(target)
    version = registry.tagged(name, IDENTITY_TAG, release.embedder_identity)
    if version is None:
        raise RegistryError(
            f"release {target} was built by {release.embedder_identity}, which no version of "
            f"{name} carries: nothing to point champion at"
        )
    current = repository.pointer(CURRENT)
    repository.move_pointer(target, expected=current, name=CURRENT)
    backend.point(CURRENT, target)
    repository.clear_pointer(ROLLBACK, expected=target)
    moves = [
        registry.move_alias(name, alias, version.version, reason, by, MoveKind.ROLLBACK)
        for alias in SERVED
    ]
    return ReleaseMove(target, current, moves)


def reconcile_champion(
    repository: IndexRepository, registry: ModelRegistry, name: str, by: str
) -> list[AliasMove]:
    """Move ``champion`` and ``production`` to the version that built the release ``current``
    names, if a crash left them behind; nothing when they agree or the release's embedder is
    not a registered version."""
    current = repository.pointer(CURRENT)
    if current is None:
        return []
    identity = repository.open(current).embedder_identity
    served = registry.tagged(name, IDENTITY_TAG, identity)
    if served is None:
        return []
    moves = []
    for alias in SERVED:
        named = registry.version(name, alias)
        if named is None or named.version != served.version:
            reason = (
                f"repair: current names {current}, built by v{served.version}; the alias move "
                "after the pointer move had not happened"
            )
            moves.append(
                registry.move_alias(name, alias, served.version, reason, by, MoveKind.REPAIR)
            )
    return moves
