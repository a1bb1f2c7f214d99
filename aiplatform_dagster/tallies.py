"""Amounts added in memory and written to a shared store now and then, for hot paths.

An API that commits a counter on every request queues each request on the store's write lock
(SQLite has one per file), and on a busy 2-core machine that lock became the slowest part of a
cached answer. So hot paths add to a ``PendingTally`` and write it in one transaction when it is
due (``flush_s`` after the last write), when the shared value is read, and at exit. A killed
process loses at most ``flush_s`` of amounts.
"""

import contextlib
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Write = Callable[[Counter[str]], None]


class PendingTally:
    """Named amounts added in this process and not yet written to the shared store."""

    def __init__(self, flush_s: float) -> None:
        self._lock = threading.Lock()
        self._amounts: Counter[str] = Counter()
        self._flush_s = flush_s
        self._taken_at = time.monotonic()

    def add(self, name: str, amount: float = 1) -> bool:
        """Add ``amount`` to ``name``; True when the tally is due to be written."""
        with self._lock:
            self._amounts[name] += amount
            return time.monotonic() - self._taken_at >= self._flush_s

    @contextmanager
    def taken(self) -> Iterator[Counter[str]]:
        """Everything pending, for a write in the block; an exception puts it back and rises."""
        with self._lock:
            amounts, self._amounts = self._amounts, Counter()
            self._taken_at = time.monotonic()
        try:
            yield amounts
        except BaseException:
            with self._lock:
                self._amounts.update(amounts)
            raise

    def flush(self, write: Write) -> None:
        """``write`` everything pending (nothing when nothing is)."""
        with self.taken() as amounts:
            if amounts:
                write(amounts)

    def flush_when_collected(self, owner: object, write: Write) -> None:
        """Flush when ``owner`` is collected or the process exits. ``write`` must not refer to
        ``owner``, or it would never be collected; a store gone by then loses the tally."""
        weakref.finalize(owner, _flush_quietly, self, write)


def _flush_quietly(pending: PendingTally, write: Write) -> None:
    with contextlib.suppress(Exception):
        pending.flush(write)
