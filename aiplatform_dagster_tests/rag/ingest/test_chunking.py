"""Chunking: budgets in embedder tokens, semantic boundaries, overlap, stable ids."""

import base64
import hashlib
import re
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.rag.ingest.chunking import (
    MAX_TITLE_TOKENS,
    ChunkingConfig,
    chunk_document,
    chunk_documents,
)
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
    chunks = chunk_document(doc, count_tokens, config).chunks

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
    for chunk in chunk_document(doc, count_tokens, ChunkingConfig(64, 8)).chunks:
        assert set(chunk.text.split()) <= words
        assert chunk.char_start == 0 or doc.text[chunk.char_start - 1] == " "


def test_paragraph_boundaries_are_preferred(count_tokens) -> None:
    doc = make_doc("\n\n".join(PARAGRAPHS))
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(160, 0)).chunks
    for chunk in chunks:
        assert chunk.text.startswith("Sentence") and chunk.text.endswith(".")


def test_consecutive_chunks_overlap(count_tokens) -> None:
    doc = make_doc(" ".join(PARAGRAPHS))
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(80, 24)).chunks
    for previous, current in pairwise(chunks):
        assert current.char_start < previous.char_end


def test_ids_are_stable_and_change_only_with_content(count_tokens) -> None:
    config = ChunkingConfig(96, 16)
    first = chunk_document(make_doc("\n\n".join(PARAGRAPHS)), count_tokens, config).chunks
    again = chunk_document(make_doc("\n\n".join(PARAGRAPHS)), count_tokens, config).chunks
    edited = chunk_document(
        make_doc("\n\n".join([*PARAGRAPHS[:-1], "A new closing paragraph."])), count_tokens, config
    ).chunks
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
    chunks = chunk_document(doc, count_tokens, ChunkingConfig(96, 0)).chunks
    footers = [c for c in chunks if c.text == footer]
    assert len(footers) == 2
    assert len({c.chunk_id for c in chunks}) == len(chunks)


PNG_BYTES = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(120))
BASE64_IMAGE = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
# WordPiece reads a long run of letters and digits as one unknown token; punctuation
# (as in base64, URLs or minified code) makes thousands of tokens of it.
UNBROKEN = ("https://cdn.example.com/a?" + "&".join(f"k{i}=v{i}" for i in range(600)))[:5000]


def assert_fits(chunks, count_tokens, config) -> None:
    """Every chunk's token count is what is embedded (title header + text) and fits."""
    for chunk in chunks:
        real_tokens = count_tokens([chunk.indexed_text])[0]
        assert chunk.token_count == real_tokens
        assert real_tokens <= config.chunk_tokens


@pytest.mark.parametrize("blob", [f"![logo]({BASE64_IMAGE})", UNBROKEN])
def test_a_token_longer_than_the_budget_is_dropped_and_reported(count_tokens, blob) -> None:
    text = f"{PARAGRAPHS[0]}\n\nThe logo follows {blob} and the text goes on.\n\n{PARAGRAPHS[1]}"
    doc = make_doc(text, doc_id="branding.md")
    good = make_doc(PARAGRAPHS[2], doc_id="good.md")
    config = ChunkingConfig(96, 16)

    result = chunk_documents([doc, good], count_tokens, config)

    assert_fits(result.chunks, count_tokens, config)
    indexed = " ".join(c.text for c in result.chunks if c.doc_id == "branding.md")
    assert BASE64_IMAGE[22:60] not in indexed and UNBROKEN[:50] not in indexed
    assert "The logo follows" in indexed and "the text goes on." in indexed
    assert "Sentence 1.5" in indexed
    assert any(c.doc_id == "good.md" for c in result.chunks)
    [problem] = result.problems
    assert problem.doc_id == "branding.md"
    start = text.index(blob.split()[0])
    assert blob[:20] in problem.reason and f"character {start}" in problem.reason
    assert "dropped" in problem.reason and "96-token" in problem.reason


def test_token_count_includes_the_title_header_and_long_titles_are_cut(count_tokens) -> None:
    long_title = " ".join(["Operating the retrieval platform in production"] * 20)
    config = ChunkingConfig(96, 16)

    result = chunk_documents(
        [make_doc("\n\n".join(PARAGRAPHS), title=long_title)], count_tokens, config
    )

    assert_fits(result.chunks, count_tokens, config)
    title = result.chunks[0].title
    assert long_title.startswith(title) and 0 < count_tokens([title])[0] <= MAX_TITLE_TOKENS
    assert {c.title for c in result.chunks} == {title}
    [problem] = result.problems
    assert problem.doc_id == "guide.md" and f"{MAX_TITLE_TOKENS} tokens" in problem.reason


def test_an_unbroken_title_is_cut_too(count_tokens) -> None:
    config = ChunkingConfig(64, 8)
    result = chunk_documents([make_doc(PARAGRAPHS[0], title=UNBROKEN)], count_tokens, config)
    assert_fits(result.chunks, count_tokens, config)
    assert UNBROKEN.startswith(result.chunks[0].title)
    assert 0 < count_tokens([result.chunks[0].title])[0] <= MAX_TITLE_TOKENS


def whitespace_is_a_token(texts):
    """A tokenizer (like some BPEs) that spends a token on each run of whitespace."""
    return [len(re.findall(r"\S+|\s+", text)) for text in texts]


def test_the_budget_holds_when_joined_text_costs_more_than_its_parts() -> None:
    config = ChunkingConfig(64, 8)
    doc = make_doc("\n\n".join(PARAGRAPHS), title="A title of several words")
    result = chunk_documents([doc], whitespace_is_a_token, config)
    assert len(result.chunks) > 3
    assert_fits(result.chunks, whitespace_is_a_token, config)
    assert result.problems == []
