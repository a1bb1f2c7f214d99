"""Extractive fallback: the best-matching source sentences, verbatim, cited, in source order."""

from aiplatform_dagster.rag.query.citations import resolve_citations
from aiplatform_dagster.rag.query.extractive import extractive_answer
from aiplatform_dagster_tests.builders import context_of

PAGING = (
    "# Paging policy\n- "
    "The primary on-call engineer is paged first. If nobody acknowledges within 15 minutes "
    "the page escalates to the secondary. Lunch is served at noon."
)
SEVERITY = (
    "Incidents with customer impact are declared SEV-1. A SEV-1 incident needs a status page "
    "update. The secondary engineer joins every SEV-1 bridge."
)


def test_best_sentences_are_quoted_with_citations_in_source_order() -> None:
    context = context_of(PAGING, SEVERITY)
    answer = extractive_answer("When does a page escalate to the secondary engineer?", context)
    # "Paging policy" matches only "page"; the bullet marker is not quoted.

    assert answer == (
        "The primary on-call engineer is paged first. [1] "
        "If nobody acknowledges within 15 minutes the page escalates to the secondary. [1] "
        "The secondary engineer joins every SEV-1 bridge. [2]"
    )
    cited = resolve_citations(answer, context)
    assert [c.doc_id for c in cited.citations] == ["doc-1.md", "doc-2.md"]
    assert not cited.flagged and not cited.uncited


def test_the_most_overlapping_sentences_win_and_count_limits_them() -> None:
    context = context_of(PAGING, SEVERITY)
    answer = extractive_answer("SEV-1 incident status page", context)

    assert answer.count("[2]") == 3 and "[1]" not in answer  # source 1 only matches "page"
    assert answer.startswith("Incidents with customer impact are declared SEV-1. [2]")
    shortest = extractive_answer("SEV-1 incident status page", context, count=1)
    assert shortest == "A SEV-1 incident needs a status page update. [2]"


def test_no_overlap_means_i_dont_know() -> None:
    answer = extractive_answer("How are GPU quotas billed?", context_of(PAGING, SEVERITY))
    assert answer == "I don't know: none of the retrieved sources matches the question."
    assert not resolve_citations(answer, context_of(PAGING)).uncited


def test_an_empty_context_means_i_dont_know() -> None:
    assert extractive_answer("paging", context_of()).startswith("I don't know")
