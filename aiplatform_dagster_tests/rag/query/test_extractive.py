"""Extractive fallback: whole sentences most like the question, in document order, cited once
per source; never a heading, a bracketed aside, a cut fragment or a list stem alone."""

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
# The start of the sample corpus's mlops/model_rollback.txt, as the first chunk holds it.
ROLLBACK = """\
MODEL ROLLBACK PROCEDURE
========================

Owner: MLOps pod
Scope: models served from the MLflow Model Registry through the champion alias.
       (Rolling back an application release is a different procedure, described in the
       release process page.)

When to roll back
-----------------
Roll back a model when a newly promoted champion causes a clear production problem, for example:
  - a spike in prediction errors or exceptions in the serving pods,
  - an obvious quality problem reported by users that started at the promotion time.
If in doubt, roll back first and investigate afterwards. A rollback is cheap and safe because the
previous version is still registered."""


def test_the_roll_back_answer_quotes_whole_sentences_and_the_stem_with_its_list() -> None:
    answer = extractive_answer("how do I roll back a model", context_of(ROLLBACK))

    assert answer == (
        "Roll back a model when a newly promoted champion causes a clear production problem, "
        "for example:\n"
        "- a spike in prediction errors or exceptions in the serving pods,\n"
        "- an obvious quality problem reported by users that started at the promotion time.\n"
        "If in doubt, roll back first and investigate afterwards. A rollback is cheap and safe "
        "because the previous version is still registered. [1]"
    )


def test_sentences_keep_document_order_and_each_source_is_cited_once() -> None:
    context = context_of(PAGING, SEVERITY)
    answer = extractive_answer("When does a page escalate to the secondary engineer?", context)

    assert answer == (
        "The primary on-call engineer is paged first. If nobody acknowledges within 15 minutes "
        "the page escalates to the secondary. [1]\n\n"
        "The secondary engineer joins every SEV-1 bridge. [2]"
    )
    cited = resolve_citations(answer, context)
    assert [c.doc_id for c in cited.citations] == ["doc-1.md", "doc-2.md"]
    assert not cited.flagged


def test_count_limits_the_sentences() -> None:
    context = context_of(PAGING, SEVERITY)
    shortest = extractive_answer("SEV-1 incident status page", context, count=1)
    assert shortest == "A SEV-1 incident needs a status page update. [2]"


def test_fragments_cut_at_chunk_boundaries_and_a_stem_without_its_list_are_left_out() -> None:
    cut = (
        "version, tags the rolled-back version and posts a message.\n\n"
        "Rollback tags the version with rolled_back=true.\n\n"
        "To roll back, run these steps:"
    )
    answer = extractive_answer("how do I roll back and tag the version", context_of(cut))
    assert answer == "Rollback tags the version with rolled_back=true. [1]"


def test_wrapped_lines_join_into_one_sentence() -> None:
    wrapped = "Serving pods check the alias every 60\nseconds and load the version it points to."
    answer = extractive_answer("how often do serving pods check the alias", context_of(wrapped))
    assert answer == (
        "Serving pods check the alias every 60 seconds and load the version it points to. [1]"
    )


def test_no_overlap_means_i_dont_know() -> None:
    answer = extractive_answer("How are GPU quotas billed?", context_of(PAGING, SEVERITY))
    assert answer == "I don't know: none of the retrieved sources matches the question."
    assert not resolve_citations(answer, context_of(PAGING)).uncited


def test_an_empty_context_means_i_dont_know() -> None:
    assert extractive_answer("paging", context_of()).startswith("I don't know")
