"""The code location: every definition under ``defs/``, discovered by folder."""

from pathlib import Path

import dagster as dg


def load_definitions() -> dg.Definitions:
    """Build the Definitions now (resources read the environment at this moment)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return load_definitions()
