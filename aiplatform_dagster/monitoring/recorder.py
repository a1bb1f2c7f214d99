"""Records answered queries into the query log off the request path.

``record`` only puts the answer on a bounded in-memory queue (microseconds); a daemon thread
embeds the questions in batches, appends them to the log and flushes every ``flush_every``
records or ``flush_interval_s`` seconds, and once more on ``close`` (registered at exit). A
full queue or a store that cannot write costs a warning and, past its bound, the oldest
records, never a failed or slower query.
"""

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from aiplatform_dagster.config import Settings
from aiplatform_dagster.monitoring.features import Embed, features_of
from aiplatform_dagster.monitoring.query_log import QueryLog, open_query_log
from aiplatform_dagster.rag.query.engine import Answer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    answer: Answer
    embedding: np.ndarray | None
    ts: datetime


class QueryRecorder:
    """Feeds ``log`` from a background thread; ``record`` never blocks or raises."""

    def __init__(
        self,
        log: QueryLog,
        embed: Embed | None = None,
        *,
        flush_every: int = 256,
        flush_interval_s: float = 30.0,
        queue_size: int = 10_000,
    ) -> None:
        self.log = log
        self._embed = embed
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        """Answers not recorded because the queue was full."""
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self._failing = False
        """The last flush failed: retry on the interval, not on every batch."""
        self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
        self._thread.start()

    def record(self, answer: Answer, embedding: np.ndarray | None = None) -> None:
        """Queue ``answer`` (with its question's embedding when the caller has it)."""
        try:
            self._queue.put_nowait(_Pending(answer, embedding, datetime.now(UTC)))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "query log: %d answers not recorded, the recorder is behind (queue of %d full)",
                    self.dropped,
                    self._queue.maxsize,
                )

    def close(self, timeout_s: float = 10.0) -> None:
        """Record everything queued so far, flush, and stop the thread."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                logger.warning("query log: recorder still busy after %g s, not waiting", timeout_s)
                return
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                try:
                    self._append(batch)
                except Exception as error:  # one bad batch must not stop the recording
                    logger.warning("query log: %d answers not recorded: %s", len(batch), error)
            due = time.monotonic() - self._last_flush >= self._flush_interval_s
            full = self._unflushed >= self._flush_every and not self._failing
            if self._unflushed and (stop or due or full):
                self._flush()
            if stop:
                return

    def _take(self) -> tuple[list[_Pending], bool]:
        """What is queued (waiting up to the flush interval for the first), and whether to stop."""
        batch: list[_Pending] = []
        try:
            item = self._queue.get(timeout=self._flush_interval_s)
            while item is not None:
                batch.append(item)
                if len(batch) >= self._flush_every:
                    return batch, False
                item = self._queue.get_nowait()
            return batch, True
        except queue.Empty:
            return batch, False

    def _append(self, batch: list[_Pending]) -> None:
        embeddings = self._embeddings(batch)
        for item, embedding in zip(batch, embeddings, strict=True):
            self.log.append(features_of(item.answer, embedding, item.ts))
        self._unflushed += len(batch)

    def _embeddings(self, batch: list[_Pending]) -> list[np.ndarray | None]:
        """The caller's embeddings, and the missing ones computed in one call."""
        missing = [i for i, item in enumerate(batch) if item.embedding is None]
        found: list[np.ndarray | None] = [item.embedding for item in batch]
        if missing and self._embed is not None:
            try:
                rows = self._embed([batch[i].answer.question for i in missing])
            except Exception as error:  # the features still count without an embedding
                logger.warning("query log: embedding %d questions failed: %s", len(missing), error)
            else:
                for i, row in zip(missing, rows, strict=True):
                    found[i] = row
        return found

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        try:
            self.log.flush()
        except Exception as error:  # a store that cannot write keeps its buffer for next time
            self._failing = True
            logger.warning("query log: flush failed, records kept for the next one: %s", error)
        else:
            self._failing = False
            self._unflushed = 0


def start_recorder(settings: Settings, embed: Embed | None) -> QueryRecorder | None:
    """The recorder the settings ask for (None when the query log is off), flushed at exit."""
    if not settings.monitoring.query_log:
        return None
    recorder = QueryRecorder(open_query_log(settings), embed)
    atexit.register(recorder.close)
    return recorder
