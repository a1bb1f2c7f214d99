"""Chunking: budgets in embedder tokens, semantic boundaries, overlap, stable ids."""

from datetime import UTC, datetime
from itertools import pairwise

import pytest

from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig, chunk_document
from aiplatform_dagster.rag.ingest.documents import Document

PARAGRAPHS = [
    " ".join(f"Sentence {p}.{s} explains retrieval augmented generation clearly." for s in range(6))
    for p in range(8)
]


def make_doc(text: str, doc_id: str = "guide.md", title: str = "Guide") -> Document:
    return Document(doc_id, title, f"/docs/{doc_id}", "hash", datetime.now(UTC), text)


@pytest.fixture(scope="module")
def count_tokens():
    return SentenceTransformerEmbedder().count_tokens


def test_chunks_fit_the_budget_and_cover_the_text(count_tokens) -> None:
    doc = make_doc("\n\n".join(PARAGRAPHS))
    config = ChunkingConfig(chunk_tokens=96, overlap_tokens=16)
    chunks = chunk_document(doc, count_tokens, config)

    assert len(chunks) > 3
    for chunk in chunks:
        real_tokens = count_tokens([chunk.indexed_text])[0]
        assert real_tokens <= config.chunk_tokens
        assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
        assert chunk.title == "Guide" and chunk.doc_id == "guide.md"
    assert [c.position for c in chunks] == list(range(len(chunks)))
    covered = "".join(doc.text[c.char_start : c.char_end] for c in chunks)
    assert all(p.split(". ")[0] in covered for p in PARAGRAPHS)
    assert chunks[-1].char_end == len(doc.text)


def test_never_splits_inside_a_word(count_tokens) -> None:
    text = " ".join(["extraordinarily", "long", "unbroken", "sentence"] * 120)
    doc = make_doc(text)
    words = set(text.split())
    for chunk in chunk_document(doc, count_tokens, ChunkingConfig(64, 8)):
        assert set(chunk.text.split()) <= words
        assert chunk.char_start == 0 or doc.text[chunk.char_start - 1] == " "


def test_paragraph_boundaries_are_preferred(count_tokens) -> None:
    doc = make_doc("\n\n".join(PARAGRAPHS))
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(160, 0))
    for chunk in chunks:
        assert chunk.text.startswith("Sentence") and chunk.text.endswith(".")


def test_consecutive_chunks_overlap(count_tokens) -> None:
    doc = make_doc(" ".join(PARAGRAPHS))
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(80, 24))
    for previous, current in pairwise(chunks):
        assert current.char_start < previous.char_end


def test_ids_are_stable_and_change_only_with_content(count_tokens) -> None:
    config = ChunkingConfig(96, 16)
    first = chunk_document(make_doc("\n\n".join(PARAGRAPHS)), count_tokens, config)
    again = chunk_document(make_doc("\n\n".join(PARAGRAPHS)), count_tokens, config)
    edited = chunk_document(
        make_doc("\n\n".join([*PARAGRAPHS[:-1], "A new closing paragraph."])), count_tokens, config
    )
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in first}) == len(first)
    shared = {c.chunk_id for c in first} & {c.chunk_id for c in edited}
    assert 0 < len(shared) < len(first)


def test_bad_config_is_explained() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        ChunkingConfig(chunk_tokens=10)
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkingConfig(chunk_tokens=100, overlap_tokens=60)


def test_repeated_text_in_one_document_still_gets_unique_ids(count_tokens) -> None:
    footer = " ".join(["See the platform handbook for the escalation policy."] * 6)
    doc = make_doc("\n\n".join([PARAGRAPHS[0], footer, PARAGRAPHS[1], footer]))
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(96, 0))
    footers = [c for c in chunks if c.text == footer]
    assert len(footers) == 2
    assert len({c.chunk_id for c in chunks}) == len(chunks)
