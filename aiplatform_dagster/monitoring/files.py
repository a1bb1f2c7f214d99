"""Files written whole or not at all, so a killed process never leaves half a file to read."""

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from aiplatform_dagster.rag.index.atomic import fsync


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a hidden scratch file beside ``path``, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(pending)
        fsync(pending)
        os.replace(pending, path)
    finally:
        pending.unlink(missing_ok=True)
    fsync(path.parent)
    return path
