"""Context packing: numbered sources in rank order, no duplicates, never over the budget."""

from collections.abc import Sequence

import pytest

from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.context import build_context
from aiplatform_dagster.rag.query.retriever import RetrievedChunk


def count_words(texts: Sequence[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def retrieved(
    text: str, doc_id: str = "guide.md", start: int = 0, score: float = 1.0, title: str = "Guide"
) -> RetrievedChunk:
    chunk = Chunk(
        chunk_id=f"{doc_id}#{start}",
        doc_id=doc_id,
        title=title,
        source_path=f"/docs/{doc_id}",
        position=start // 100,
        char_start=start,
        char_end=start + len(text),
        token_count=len(text.split()),
        text=text,
    )
    return RetrievedChunk(chunk, score)


def test_sources_are_numbered_in_rank_order_and_rendered_with_their_document() -> None:
    chunks = [
        retrieved("Paging escalates after 15 minutes.", "paging.md", score=0.9, title="Paging"),
        retrieved("BM25 ranks by term frequency.", "bm25.md", score=0.5, title="Keyword search"),
    ]
    context = build_context(chunks, 1000, count_words)

    assert [(s.number, s.chunk.doc_id, s.score) for s in context.sources] == [
        (1, "paging.md", 0.9),
        (2, "bm25.md", 0.5),
    ]
    assert context.text == (
        "[1] Paging (paging.md)\nPaging escalates after 15 minutes.\n\n"
        "[2] Keyword search (bm25.md)\nBM25 ranks by term frequency."
    )
    assert context.token_count == sum(count_words(context.text.split("\n\n")))
    assert (context.dropped_for_budget, context.dropped_duplicates) == (0, 0)


def test_overlapping_chunks_of_one_document_merge_into_the_higher_ranked_source() -> None:
    document = "alpha beta gamma delta epsilon zeta eta theta"
    first = retrieved(document[:22], start=100)  # "alpha beta gamma delta"
    overlapping = retrieved(document[11:30], start=111, score=0.9)  # "gamma delta epsilon"
    inside = retrieved(document[6:16], start=106, score=0.8)  # "beta gamma": nothing new
    adjacent = retrieved("iota kappa", start=100 + len(document) + 1, score=0.7)
    same_span_other_doc = retrieved("alpha beta gamma iota", doc_id="other.md", start=100)

    context = build_context(
        [first, overlapping, inside, adjacent, same_span_other_doc], 1000, count_words
    )

    assert [s.chunk.chunk_id for s in context.sources] == [
        "guide.md#100",
        f"guide.md#{adjacent.chunk.char_start}",
        "other.md#100",
    ]
    merged = context.sources[0].chunk
    assert merged.text == "alpha beta gamma delta epsilon"
    assert (merged.char_start, merged.char_end) == (100, 130)
    assert context.text.count("gamma delta") == 1
    assert [s.number for s in context.sources] == [1, 2, 3]
    assert context.dropped_duplicates == 2


def test_a_merge_that_would_overflow_the_budget_keeps_the_original_source() -> None:
    first = retrieved("one two three four", start=0)
    overlapping = retrieved("three four five six seven eight", start=8)
    context = build_context([first, overlapping], 8, count_words)
    assert [s.chunk.text for s in context.sources] == ["one two three four"]
    assert context.token_count <= 8


def test_identical_text_from_another_document_is_dropped() -> None:
    context = build_context(
        [
            retrieved("Rotate keys every 90 days.", "a.md"),
            retrieved("Rotate keys  every 90 days.", "b.md"),
        ],
        1000,
        count_words,
    )
    assert [s.chunk.doc_id for s in context.sources] == ["a.md"]
    assert context.dropped_duplicates == 1


def test_chunks_over_the_budget_are_skipped_and_a_later_short_one_still_fits() -> None:
    long = " ".join(["word"] * 30)
    chunks = [
        retrieved("one two three four five", "a.md"),  # 8 tokens with its header
        retrieved(long, "b.md"),  # 33 tokens: does not fit
        retrieved("six seven", "c.md"),  # 5 tokens
    ]
    context = build_context(chunks, 15, count_words)

    assert [s.chunk.doc_id for s in context.sources] == ["a.md", "c.md"]
    assert [s.number for s in context.sources] == [1, 2]
    assert context.text.startswith("[1] Guide (a.md)") and "[2] Guide (c.md)" in context.text
    assert context.token_count == 13 <= 15
    assert context.dropped_for_budget == 1


def test_a_first_source_over_the_budget_is_truncated_at_a_word_boundary() -> None:
    text = "Incidents with customer impact are declared SEV-1 and need a status page update."
    context = build_context([retrieved(text), retrieved("Second source.", "b.md")], 10, count_words)

    assert len(context.sources) == 1
    kept = context.sources[0].chunk
    assert kept.chunk_id == "guide.md#0"
    assert text.startswith(kept.text) and text[len(kept.text)] == " "  # ends on a whole word
    assert kept.text == "Incidents with customer impact are declared SEV-1"
    assert kept.char_end == kept.char_start + len(kept.text)
    assert context.token_count == 10
    assert context.dropped_for_budget == 1


def test_nothing_retrieved_gives_an_empty_context() -> None:
    context = build_context([], 100, count_words)
    assert (context.sources, context.text, context.token_count) == ([], "", 0)


def test_a_budget_below_one_token_is_rejected() -> None:
    with pytest.raises(ValueError, match="token_budget"):
        build_context([retrieved("text")], 0, count_words)
