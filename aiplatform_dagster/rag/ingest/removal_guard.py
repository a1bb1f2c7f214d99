"""Refuse an ingestion that would remove most documents at once.

An empty or missing documents folder (an unmounted volume, a wrong path) looks exactly like
"the user deleted every document"; without this guard the next run empties every index.
"""

from collections.abc import Collection
from pathlib import Path

from aiplatform_dagster.errors import PlatformError

DEFAULT_MAX_REMOVED_SHARE = 0.5
ALLOW_SWITCH = "allow_mass_removal"


class MassRemovalError(PlatformError):
    """The new documents would remove more than the allowed share of the indexed ones."""


def check_removal(
    previous_ids: Collection[str],
    current_ids: Collection[str],
    *,
    folder: str | Path,
    max_share: float = DEFAULT_MAX_REMOVED_SHARE,
    allow: bool = False,
) -> None:
    """Raise MassRemovalError when more than ``max_share`` of ``previous_ids`` would go.

    A first ingestion (no previous documents) never refuses; ``allow`` lets an intended
    mass removal through.
    """
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be between 0 and 1, got {max_share}")
    if allow or not previous_ids:
        return
    removed = len(set(previous_ids) - set(current_ids))
    if removed / len(previous_ids) > max_share:
        raise MassRemovalError(
            f"Refusing to remove {removed} of {len(previous_ids)} indexed documents: the "
            f"documents folder {folder} now holds {len(current_ids)}, and at most "
            f"{max_share:.0%} may be removed in one run. If the folder is unmounted or wrong, "
            f"fix it and rerun; if the removal is intended, set {ALLOW_SWITCH}: true in the "
            "source_documents config."
        )
