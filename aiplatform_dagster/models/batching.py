"""Continuous batching of concurrent query encodes: one model call for every question waiting.

Why: a served question spends most of its CPU in the query encoder (MiniLM on 2 cores: about
19 ms of the engine's 20), and concurrent requests each running their own forward pass share
the cores badly, so throughput stops at about 50 questions/s and latency grows with every
client. Encoding the questions that arrive together as one batch costs little more than one
of them. There is no waiting window: a worker takes everything queued the moment it is free,
so a lone question is encoded at once, and under load each batch holds the questions that
came in during the previous one (what TEI and Triton call dynamic batching).
"""

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

import numpy as np

from aiplatform_dagster.models.embedders import Embedder, Progress

DEFAULT_MAX_BATCH = 64


@dataclass
class _Request:
    texts: list[str]
    result: Future = field(default_factory=Future)


class BatchingEmbedder:
    """An ``Embedder`` whose small ``encode`` calls from many threads share model calls.

    Calls with more than ``max_batch`` texts, or with a progress callback (ingestion, the query
    log's background encodes), go straight to the model. The worker is a daemon thread started
    on first use; an error in a batch is raised in every caller of that batch.
    """

    def __init__(self, inner: Embedder, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.inner = inner
        self._max_batch = max_batch
        self._queue: SimpleQueue[_Request] = SimpleQueue()
        self._start = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches = 0
        """Model calls made for queued requests (more requests than batches: they shared)."""

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def __getattr__(self, name: str) -> object:
        """What else the wrapped embedder offers (its model path, for its identity)."""
        return getattr(self.inner, name)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        if progress is not None or not texts or len(texts) > self._max_batch:
            return self.inner.encode(texts, progress)
        self._ensure_worker()
        request = _Request(list(texts))
        self._queue.put(request)
        return request.result.result()

    def _ensure_worker(self) -> None:
        if self._worker is not None:
            return
        with self._start:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._serve, name="query-encoder-batcher", daemon=True
                )
                self._worker.start()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].texts)
            while size < self._max_batch:
                try:
                    request = self._queue.get_nowait()
                except Empty:
                    break
                batch.append(request)
                size += len(request.texts)
            self._encode(batch)

    def _encode(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = self.inner.encode(texts)
        except BaseException as error:  # every caller of the batch gets the model's error
            for request in batch:
                request.result.set_exception(error)
            return
        self.batches += 1
        start = 0
        for request in batch:
            request.result.set_result(vectors[start : start + len(request.texts)])
            start += len(request.texts)
