"""An answer without an LLM: the source sentences that share the most terms with the question.

It keeps the RAG loop usable (and its citations testable) on a laptop with no model endpoint.
Sentences are quoted verbatim, so the answer is only as good as retrieval, never invented.
"""

import re

from aiplatform_dagster.rag.index.text_analysis import analyze
from aiplatform_dagster.rag.query.context import Context
from aiplatform_dagster.rag.query.prompts import NO_ANSWER

NOTHING_MATCHES = f"{NO_ANSWER}: none of the retrieved sources matches the question."

# A sentence ends at . ! or ? followed by whitespace, or at a line break (headings, list items).
_SENTENCE = re.compile(r"[^\n]+?(?:[.!?]+(?=\s)|$)", re.MULTILINE)
# Markdown block markers (heading hashes, bullets, quotes) are layout, not part of a quote.
_BLOCK_MARKER = re.compile(r"^(?:#+|[-*+>])\s+")


def extractive_answer(question: str, context: Context, count: int = 3) -> str:
    """Up to ``count`` best-matching sentences, each cited, in source order."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    wanted = set(analyze(question))
    candidates: list[tuple[int, int, int, str]] = []  # (overlap, source number, order, sentence)
    seen: set[str] = set()
    for source in context.sources:
        for order, match in enumerate(_SENTENCE.finditer(source.chunk.text)):
            sentence = _BLOCK_MARKER.sub("", " ".join(match.group(0).split()))
            overlap = len(wanted.intersection(analyze(sentence)))
            if overlap and sentence not in seen:
                seen.add(sentence)
                candidates.append((overlap, source.number, order, sentence))
    if not candidates:
        return NOTHING_MATCHES
    best = sorted(candidates, key=lambda c: (-c[0], c[1], c[2]))[:count]
    return " ".join(
        f"{sentence} [{number}]" for _, number, _, sentence in sorted(best, key=lambda c: c[1:3])
    )
