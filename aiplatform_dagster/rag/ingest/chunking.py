"""Recursive, token-budgeted chunking at semantic boundaries.

Paragraphs are packed into chunks while they fit; a paragraph that does not fit is
split into sentences, a sentence into words. Words are never cut: an unbroken string
too long for any chunk is left out and reported. Sizes are counted in the embedder's own
tokens on what is really embedded (title header + text), so a chunk is never silently
truncated by the model. Each chunk keeps its document title (cut to ``MAX_TITLE_TOKENS``)
and character span, which citations point at.
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
class DocumentProblem:
    """Something in a document that was cut or left out of its chunks (the rest is indexed)."""

    doc_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChunkedDocuments:
    """Chunks in document order, and the problems to report beside the skipped files."""

    chunks: list[Chunk]
    problems: list[DocumentProblem]


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    tokens: int


def chunk_document(
    doc: Document, count_tokens: TokenCounter, config: ChunkingConfig
) -> ChunkedDocuments:
    """Split one document into chunks whose indexed text (title header + text) fits the budget.

    An unbroken string that alone exceeds the budget (a data: URI, say) cannot be embedded
    whole, so it is left out of every chunk and reported.
    """
    title, problems = _fit_title(doc, count_tokens)
    header_tokens = count_tokens([indexed_text(title, "")])[0] if title else 0
    limit = config.chunk_tokens - header_tokens
    spans = _atomic_spans(doc.text, 0, len(doc.text), 0, count_tokens, limit)
    problems += [_dropped(doc, span, config) for span in spans if span.tokens > limit]
    chunks: list[Chunk] = []
    seen: Counter[str] = Counter()
    for position, (start, end, tokens) in enumerate(
        _fit_windows(doc, title, spans, limit, count_tokens, config)
    ):
        text = doc.text[start:end]
        chunks.append(
            Chunk(
                chunk_id=chunk_id_for(doc.doc_id, text, seen[text]),
                doc_id=doc.doc_id,
                title=title,
                source_path=doc.source_path,
                position=position,
                char_start=start,
                char_end=end,
                token_count=tokens,
                text=text,
            )
        )
        seen[text] += 1
    return ChunkedDocuments(chunks, problems)


def chunk_documents(
    docs: Sequence[Document], count_tokens: TokenCounter, config: ChunkingConfig
) -> ChunkedDocuments:
    """Chunk many documents; chunk order follows document order, then position."""
    results = [chunk_document(doc, count_tokens, config) for doc in docs]
    return ChunkedDocuments(
        chunks=[chunk for result in results for chunk in result.chunks],
        problems=[problem for result in results for problem in result.problems],
    )


def _fit_title(doc: Document, count_tokens: TokenCounter) -> tuple[str, list[DocumentProblem]]:
    """The title cut to ``MAX_TITLE_TOKENS``: every chunk repeats it, so a long one would
    crowd out the text (at word ends; inside the first word if that alone is too long)."""
    tokens = count_tokens([doc.title])[0] if doc.title else 0
    if tokens <= MAX_TITLE_TOKENS:
        return doc.title, []
    word_ends = [m.end() for m in _WORD.finditer(doc.title)]
    end = _longest_fitting_prefix(doc.title, word_ends, count_tokens, MAX_TITLE_TOKENS)
    if end == 0:
        every_char = range(1, word_ends[0] + 1)
        end = _longest_fitting_prefix(doc.title, every_char, count_tokens, MAX_TITLE_TOKENS)
    title = doc.title[:end]
    reason = (
        f"title cut to its first {MAX_TITLE_TOKENS} tokens ({title!r}): it was {tokens} "
        "tokens, and every chunk repeats its title; give the document a shorter title"
    )
    return title, [DocumentProblem(doc.doc_id, reason)]


def _longest_fitting_prefix(
    text: str, ends: Sequence[int], count_tokens: TokenCounter, limit: int
) -> int:
    """The largest of the ascending ``ends`` whose prefix has at most ``limit`` tokens, else 0."""
    fitting, too_long = 0, len(ends)
    while fitting < too_long:
        middle = (fitting + too_long) // 2
        if count_tokens([text[: ends[middle]]])[0] <= limit:
            fitting = middle + 1
        else:
            too_long = middle
    return ends[fitting - 1] if fitting else 0


def _dropped(doc: Document, span: _Span, config: ChunkingConfig) -> DocumentProblem:
    """Report an unbroken string too long for any chunk, with where it is and how to fix it."""
    token = doc.text[span.start : span.end]
    return DocumentProblem(
        doc.doc_id,
        f"dropped an unbroken {len(token):,}-character string at character {span.start} "
        f"({token[:40]!r}...): its {span.tokens:,} tokens do not fit a "
        f"{config.chunk_tokens}-token chunk with its title, so it is not indexed; break it "
        "with spaces if it should be searchable, or remove it (an embedded data: URI, say)",
    )


def _fit_windows(
    doc: Document,
    title: str,
    spans: list[_Span],
    limit: int,
    count_tokens: TokenCounter,
    config: ChunkingConfig,
) -> list[tuple[int, int, int]]:
    """Windows (start, end, real tokens of title header + text) that all fit the budget.

    Packing adds up span counts; a tokenizer that spends tokens on the whitespace joining
    spans makes a window cost more, so such documents are re-packed with a tighter budget.
    Spans over ``limit`` (dropped strings) split the text: no window may contain one.
    """
    runs: list[list[_Span]] = [[]]
    for span in spans:
        if span.tokens > limit:
            runs.append([])
        else:
            runs[-1].append(span)
    budget = limit
    while True:
        windows = [w for run in runs for w in _pack(run, budget, config.overlap_tokens)]
        counts = count_tokens([indexed_text(title, doc.text[s:e]) for s, e, _ in windows])
        excess = max((count - config.chunk_tokens for count in counts), default=0)
        if excess <= 0:
            return [(s, e, count) for (s, e, _), count in zip(windows, counts, strict=True)]
        if budget == 0:
            raise ValueError(
                f"{doc.doc_id}: single words with the title exceed {config.chunk_tokens} "
                "tokens under this tokenizer; raise chunk_tokens"
            )
        budget = max(budget - excess, 0)


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
