"""Write a directory or a file completely or not at all, so a crash never leaves half of one."""

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``target`` only if the block succeeds.

    Files are fsynced before the swap, so after a crash ``target`` holds the previous
    complete version or the new one (or, between the two renames of a replacement, is
    absent with the previous version in a ``.NAME.*.old`` sibling); never a mix. On error
    the scratch directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    scratch.mkdir()
    try:
        yield scratch
        for path in scratch.iterdir():
            fsync(path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    retired = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
    if target.exists():
        target.rename(retired)
    scratch.rename(target)
    fsync(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


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


def fsync(path: Path) -> None:
    """Flush a file or directory to disk, so a rename after it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
