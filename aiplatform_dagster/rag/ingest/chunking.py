"""Recursive, token-budgeted chunking at semantic boundaries.

Paragraphs are packed into chunks while they fit; a paragraph that does not fit is
split into sentences, a sentence into words. Words are never cut. Sizes are counted
in the embedder's own tokens, so a chunk is never silently truncated by the model.
Each chunk keeps its document title and character span, which citations point at.
"""

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiplatform_dagster.rag.ingest.documents import Document

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Counts tokens for a batch of texts (the embedder's tokenizer, no special tokens)."""

_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", re.DOTALL)
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+[\"')\]]*(?=\s)|\n|\Z)", re.DOTALL)
_WORD = re.compile(r"\S+")
_LEVELS = (_PARAGRAPH, _SENTENCE, _WORD)
MAX_TITLE_TOKENS = 32
DEFAULT_CHUNK_TOKENS = 240
DEFAULT_OVERLAP_TOKENS = 32


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    """Chunk budget (including the title header) and overlap, both in embedder tokens."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        if self.chunk_tokens < MAX_TITLE_TOKENS + 16:
            raise ValueError(
                f"chunk_tokens={self.chunk_tokens} is too small: use at least "
                f"{MAX_TITLE_TOKENS + 16} so a chunk holds its title and some text"
            )
        if not 0 <= self.overlap_tokens < self.chunk_tokens // 2:
            raise ValueError(
                f"overlap_tokens={self.overlap_tokens} must be >= 0 and less than half "
                f"of chunk_tokens ({self.chunk_tokens})"
            )


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document."""

    chunk_id: str
    doc_id: str
    title: str
    source_path: str
    position: int
    char_start: int
    char_end: int
    token_count: int
    text: str

    @property
    def indexed_text(self) -> str:
        """What is embedded and keyword-indexed: the title gives every chunk its context."""
        return indexed_text(self.title, self.text)


def indexed_text(title: str, text: str) -> str:
    """Title header plus body, the text both retrievers see."""
    return f"{title}\n{text}" if title else text


def chunk_id_for(doc_id: str, text: str, occurrence: int = 0) -> str:
    """Content-addressed id: the same text in the same document keeps its id (and vector).

    ``occurrence`` counts earlier chunks of the document with identical text (a repeated
    footer, say), so ids stay unique without depending on position.
    """
    key = f"{doc_id}\x00{text}" + (f"\x00{occurrence}" if occurrence else "")
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    tokens: int


def chunk_document(
    doc: Document, count_tokens: TokenCounter, config: ChunkingConfig
) -> list[Chunk]:
    """Split one document into chunks that fit ``config.chunk_tokens`` with their title."""
    title_tokens = min(count_tokens([doc.title])[0], MAX_TITLE_TOKENS) if doc.title else 0
    budget = config.chunk_tokens - title_tokens - 1
    spans = _atomic_spans(doc.text, 0, len(doc.text), 0, count_tokens, budget)
    chunks: list[Chunk] = []
    seen: Counter[str] = Counter()
    for position, (start, end, tokens) in enumerate(_pack(spans, budget, config.overlap_tokens)):
        text = doc.text[start:end]
        chunks.append(
            Chunk(
                chunk_id=chunk_id_for(doc.doc_id, text, seen[text]),
                doc_id=doc.doc_id,
                title=doc.title,
                source_path=doc.source_path,
                position=position,
                char_start=start,
                char_end=end,
                token_count=tokens + title_tokens,
                text=text,
            )
        )
        seen[text] += 1
    return chunks


def chunk_documents(
    docs: Sequence[Document], count_tokens: TokenCounter, config: ChunkingConfig
) -> list[Chunk]:
    """Chunk many documents; chunk order follows document order, then position."""
    return [chunk for doc in docs for chunk in chunk_document(doc, count_tokens, config)]


def _atomic_spans(
    text: str, start: int, end: int, level: int, count_tokens: TokenCounter, budget: int
) -> list[_Span]:
    """Units at the coarsest level that fit the budget, refining only those that do not."""
    pattern = _LEVELS[level]
    matches = [(start + m.start(), start + m.end()) for m in pattern.finditer(text[start:end])]
    counts = count_tokens([text[s:e] for s, e in matches]) if matches else []
    spans: list[_Span] = []
    for (s, e), tokens in zip(matches, counts, strict=True):
        if tokens > budget and level + 1 < len(_LEVELS):
            spans.extend(_atomic_spans(text, s, e, level + 1, count_tokens, budget))
        else:
            spans.append(_Span(s, e, tokens))
    return spans


def _pack(spans: list[_Span], budget: int, overlap: int) -> list[tuple[int, int, int]]:
    """Greedily pack spans into windows; each new window starts with up to ``overlap``
    tokens of trailing spans from the previous one."""
    windows: list[tuple[int, int, int]] = []
    current: list[_Span] = []
    used = 0
    for span in spans:
        if current and used + span.tokens > budget:
            windows.append((current[0].start, current[-1].end, used))
            carried: list[_Span] = []
            carried_tokens = 0
            for previous in reversed(current):
                if carried_tokens + previous.tokens > overlap or len(carried) + 1 == len(current):
                    break
                carried.insert(0, previous)
                carried_tokens += previous.tokens
            if carried_tokens + span.tokens > budget:
                carried, carried_tokens = [], 0
            current, used = carried, carried_tokens
        current.append(span)
        used += span.tokens
    if current:
        windows.append((current[0].start, current[-1].end, used))
    return windows
