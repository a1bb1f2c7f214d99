"""Citations: markers map to the right documents; invented numbers are removed and flagged."""

import pytest

from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.citations import is_no_answer, resolve_citations
from aiplatform_dagster.rag.query.context import Context, build_context
from aiplatform_dagster.rag.query.retriever import RetrievedChunk


def three_sources() -> Context:
    chunks = [
        RetrievedChunk(
            Chunk(
                f"chunk-{n}",
                f"doc-{n}.md",
                f"Doc {n}",
                f"/docs/doc-{n}.md",
                n,
                0,
                20,
                4,
                f"Fact {n}.",
            ),
            1.0 / n,
        )
        for n in (1, 2, 3)
    ]
    return build_context(chunks, 1000, lambda texts: [len(t.split()) for t in texts])


def test_each_marker_becomes_a_citation_of_its_document_in_order_of_first_use() -> None:
    answer = resolve_citations("Paging escalates [2]. Keys rotate [1][2].", three_sources())

    assert answer.text == "Paging escalates [2]. Keys rotate [1][2]."
    assert [
        (c.number, c.doc_id, c.title, c.source_path, c.chunk_id, c.position)
        for c in answer.citations
    ] == [
        (2, "doc-2.md", "Doc 2", "/docs/doc-2.md", "chunk-2", 2),
        (1, "doc-1.md", "Doc 1", "/docs/doc-1.md", "chunk-1", 1),
    ]
    assert (answer.invalid_citations, answer.flagged, answer.uncited) == ([], False, False)


@pytest.mark.parametrize(
    ("marker", "numbers"),
    [
        ("[1, 3]", [1, 3]),
        ("[1,2]", [1, 2]),
        ("[1-3]", [1, 2, 3]),
        ("[2–3]", [2, 3]),
        ("[3][1]", [3, 1]),
    ],
)
def test_lists_ranges_and_adjacent_markers_are_understood(marker: str, numbers: list[int]) -> None:
    answer = resolve_citations(f"A claim {marker}.", three_sources())
    assert [c.number for c in answer.citations] == numbers
    assert answer.text == f"A claim {marker}."


def test_a_number_outside_the_context_is_removed_and_flagged() -> None:
    answer = resolve_citations(
        "Quotas are unlimited [7]. Keys rotate [1, 9]. See [2-4].", three_sources()
    )

    assert answer.text == "Quotas are unlimited. Keys rotate [1]. See [2, 3]."
    assert [c.number for c in answer.citations] == [1, 2, 3]
    assert answer.invalid_citations == [7, 9, 4]
    assert answer.flagged


def test_an_answer_without_valid_citations_is_uncited_and_flagged_unless_it_is_i_dont_know() -> (
    None
):
    context = three_sources()
    plain = resolve_citations("Keys rotate every 90 days.", context)
    assert plain.uncited and plain.flagged and plain.invalid_citations == []
    assert resolve_citations("Keys rotate [5].", context).uncited
    idk = resolve_citations("I don't know: the sources do not cover quotas.", context)
    assert not idk.uncited and not idk.flagged and idk.citations == []


@pytest.mark.parametrize(
    "answer",
    ["I don't know.", "I don’t know", "**I don't know** - no source covers it", "i do not know"],
)
def test_i_dont_know_is_recognised_in_its_common_forms(answer: str) -> None:
    assert is_no_answer(answer)


def test_an_answer_merely_mentioning_not_knowing_is_not_a_refusal() -> None:
    assert not is_no_answer("The operator said I don't know the password [1].")
