"""Amounts added in memory and written to a shared store now and then, for hot paths.

An API that commits a counter on every request queues each request on the store's write lock
(SQLite has one per file), and on a busy 2-core machine that lock became the slowest part of a
cached answer. So hot paths add to a ``PendingTally`` and write it in one transaction when it is
due (``flush_s`` after the last write), when the shared value is read, and at exit. A killed
process loses at most ``flush_s`` of amounts.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable


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

    def take(self) -> Counter[str]:
        """Everything pending, now owed by the caller (``put_back`` it if the write fails)."""
        with self._lock:
            amounts, self._amounts = self._amounts, Counter()
            self._taken_at = time.monotonic()
            return amounts

    def put_back(self, amounts: Counter[str]) -> None:
        with self._lock:
            self._amounts.update(amounts)

    def flush(self, write: Callable[[Counter[str]], None]) -> None:
        """``write`` everything pending; on an exception it stays pending and the error rises."""
        amounts = self.take()
        if not amounts:
            return
        try:
            write(amounts)
        except BaseException:
            self.put_back(amounts)
            raise
