"""Quality expectations name the rows that break them, so a failed check can be acted on."""

import numpy as np

from aiplatform_dagster.rag.ingest.chunking import Chunk, chunk_id_for
from aiplatform_dagster.rag.ingest.quality import check_chunks, check_embeddings


def make_chunk(doc_id: str, position: int, tokens: int, text: str = "Some text.") -> Chunk:
    chunk_id = chunk_id_for(doc_id, f"{text} {position}")
    return Chunk(chunk_id, doc_id, "Title", f"/docs/{doc_id}", position, 0, 9, tokens, text)


def test_an_over_budget_chunk_is_named_by_document_chunk_and_position() -> None:
    fine = make_chunk("guide.md", 0, 100)
    too_long = make_chunk("branding.md", 3, 364)

    results = {r.name: r for r in check_chunks([fine, too_long], {"guide.md", "branding.md"}, 256)}

    failed = results["token_count_within_bounds"]
    assert not failed.success and failed.unexpected_count == 1
    for text in (failed.description, str(failed.unexpected_examples[0])):
        assert "branding.md" in text and too_long.chunk_id in text
        assert "position 3" in text and "364" in text
    assert "guide.md" not in failed.description
    assert all(r.success for name, r in results.items() if name != "token_count_within_bounds")


def test_empty_duplicate_and_orphan_chunks_are_named() -> None:
    empty = make_chunk("guide.md", 1, 5, text="   ")
    orphan = make_chunk("deleted.md", 0, 5)
    twin = make_chunk("guide.md", 2, 5)
    results = {
        r.name: r
        for r in check_chunks([empty, orphan, twin, twin], {"guide.md"}, 256)
        if not r.success
    }

    assert set(results) == {"text_not_empty", "chunk_ids_unique", "documents_exist"}
    assert "guide.md" in results["text_not_empty"].description
    assert "position 1" in results["text_not_empty"].description
    assert "deleted.md" in results["documents_exist"].description
    assert twin.chunk_id in results["chunk_ids_unique"].description


def test_a_vector_of_the_wrong_length_names_its_chunk() -> None:
    vectors = np.eye(3, dtype=np.float32)
    vectors[1] *= 2
    results = {r.name: r for r in check_embeddings(["a1", "b2", "c3"], vectors, 3, 3)}
    assert not results["unit_norm"].success
    assert "b2" in results["unit_norm"].description
    assert "a1" not in results["unit_norm"].description
