"""A writer lock that holds across processes and machines sharing one volume.

POSIX record locks (``fcntl.lockf``) are released by the kernel when their process dies, so a
writer killed with SIGKILL never leaves a stale lock behind, and they are forwarded to the
server by NFS and by SMB mounts without ``nobrl`` (Azure Files), so pods on different nodes
exclude each other too. A record lock belongs to a process, not a file descriptor, so a
thread lock per lock file guards against a second writer in the same process (one per file, so
a writer may hold one lock while it takes another, as a serving flip holds the index's).
"""

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiplatform_dagster.errors import PlatformError

_POLL_S = 0.05
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class LockTimeout(PlatformError):
    """Another writer held the lock for longer than the caller was willing to wait."""


@contextmanager
def writer_lock(path: Path, timeout_s: float, purpose: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; wait up to ``timeout_s`` for another writer.

    The lock file records who holds it (host, pid, purpose, since when), so a timeout names
    the writer that was in the way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    thread_lock = _thread_lock(path)
    if not thread_lock.acquire(timeout=max(timeout_s, 0)):
        raise LockTimeout(f"{path}: another writer in this process held the lock for {timeout_s}s")
    try:
        with open(path, "a+") as handle:
            while True:
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"{path}: another writer holds the lock "
                            f"({_holder(path)}); waited {timeout_s:.0f}s. Wait for it to finish "
                            "or raise AIPLATFORM_RELEASE_LOCK_TIMEOUT_S."
                        ) from None
                    time.sleep(_POLL_S)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(_owner(purpose)))
                handle.flush()
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
    finally:
        thread_lock.release()


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path.resolve(), threading.Lock())


def _owner(purpose: str) -> dict[str, object]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "purpose": purpose,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _holder(path: Path) -> str:
    try:
        owner = json.loads(path.read_text("utf-8"))
        return f"pid {owner['pid']} on {owner['host']}, {owner['purpose']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
