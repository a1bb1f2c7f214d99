"""Pack reranked chunks into the LLM's context window as numbered, citable sources.

Overlapping chunks of one document (chunking overlaps them on purpose) would spend the budget
twice on the same words and split citations between two numbers, so a lower-ranked chunk that
overlaps a kept one is merged into it (one source, the union of both spans), and one wholly
inside it is dropped. Sources are numbered in rank order; the numbers are what answers cite.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.retriever import RetrievedChunk

_WORD_END = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Source:
    """One numbered source: ``[number]`` in the context text and in the answer."""

    number: int
    chunk: Chunk
    score: float


@dataclass(frozen=True, slots=True)
class Context:
    """The sources an answer may cite and their rendering for the prompt.

    ``token_count`` is the sum of the rendered sources' tokens, the figure the budget bounds.
    """

    sources: list[Source]
    text: str
    token_count: int
    dropped_for_budget: int
    dropped_duplicates: int

    def source(self, number: int) -> Source | None:
        """The source cited as ``[number]``, or None when the context has no such source."""
        return self.sources[number - 1] if 1 <= number <= len(self.sources) else None


def render_source(number: int, chunk: Chunk) -> str:
    """A source as the model sees it: a numbered header naming the document, then the text."""
    title = f"{chunk.title} " if chunk.title else ""
    return f"[{number}] {title}({chunk.doc_id})\n{chunk.text}"


def build_context(
    chunks: Sequence[RetrievedChunk],
    token_budget: int,
    count_tokens: Callable[[Sequence[str]], list[int]],
) -> Context:
    """Keep chunks in rank order while they fit ``token_budget``, skipping duplicates.

    A chunk that does not fit is skipped (a later, shorter one may still fit). The first source
    is truncated at a word boundary instead, so a long top chunk never leaves the context empty.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}")
    kept: list[RetrievedChunk] = []
    blocks: list[str] = []
    token_counts: list[int] = []
    dropped_for_budget = dropped_duplicates = 0
    for candidate in chunks:
        index, merged = _absorbed_by(candidate.chunk, [item.chunk for item in kept])
        if index is not None:
            dropped_duplicates += 1
            if merged is None:
                continue
            block = render_source(index + 1, merged)
            tokens = count_tokens([block])[0]
            if sum(token_counts) - token_counts[index] + tokens <= token_budget:
                kept[index] = RetrievedChunk(merged, kept[index].score)
                blocks[index], token_counts[index] = block, tokens
            continue
        number = len(kept) + 1
        block = render_source(number, candidate.chunk)
        tokens = count_tokens([block])[0]
        if tokens > token_budget and not kept:
            truncated = _truncate(candidate, token_budget, count_tokens)
            if truncated is not None:
                candidate, block, tokens = truncated
        if sum(token_counts) + tokens > token_budget:
            dropped_for_budget += 1
            continue
        kept.append(candidate)
        blocks.append(block)
        token_counts.append(tokens)
    used = sum(token_counts)
    sources = [Source(n, item.chunk, item.score) for n, item in enumerate(kept, start=1)]
    return Context(sources, "\n\n".join(blocks), used, dropped_for_budget, dropped_duplicates)


def _absorbed_by(chunk: Chunk, kept: Sequence[Chunk]) -> tuple[int | None, Chunk | None]:
    """Where ``chunk`` repeats a kept source: (its index, the merged chunk), (index, None)
    when nothing new would be added, or (None, None) when it is a new source."""
    for index, earlier in enumerate(kept):
        if chunk.text.split() == earlier.text.split():
            return index, None
        if chunk.doc_id != earlier.doc_id or not (
            chunk.char_start < earlier.char_end and earlier.char_start < chunk.char_end
        ):
            continue
        if earlier.char_start <= chunk.char_start and chunk.char_end <= earlier.char_end:
            return index, None
        return index, _union(earlier, chunk)
    return None, None


def _union(earlier: Chunk, later: Chunk) -> Chunk:
    """One chunk spanning two overlapping chunks of the same document (offsets are the
    document's, so the overlap is written once). The higher-ranked chunk keeps its id."""
    first, second = sorted((earlier, later), key=lambda c: c.char_start)
    text = first.text + second.text[first.char_end - second.char_start :]
    if second.char_end < first.char_end:
        text = first.text
    return replace(
        earlier,
        text=text,
        char_start=first.char_start,
        char_end=max(first.char_end, second.char_end),
        position=first.position,
    )


def _truncate(
    item: RetrievedChunk, token_budget: int, count_tokens: Callable[[Sequence[str]], list[int]]
) -> tuple[RetrievedChunk, str, int] | None:
    """The longest word-boundary prefix of the first source whose block fits the budget;
    None when not even its first word fits."""
    chunk = item.chunk
    ends = [match.end() for match in _WORD_END.finditer(chunk.text)]
    best: tuple[RetrievedChunk, str, int] | None = None
    low, high = 0, len(ends) - 1
    while low <= high:
        middle = (low + high) // 2
        text = chunk.text[: ends[middle]]
        shorter = replace(chunk, text=text, char_end=chunk.char_start + len(text))
        block = render_source(1, shorter)
        tokens = count_tokens([block])[0]
        if tokens <= token_budget:
            best = (RetrievedChunk(replace(shorter, token_count=tokens), item.score), block, tokens)
            low = middle + 1
        else:
            high = middle - 1
    return best
