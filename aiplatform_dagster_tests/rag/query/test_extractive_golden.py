"""Golden questions over the shipped sample corpus: what a user without an LLM reads.

Each answer must read as prose (whole sentences, no heading, no bracketed aside, no list stem
without its list), cite each source once, cite the document that answers the question, and
hold the fact that answers it.
"""

import re

import pytest

from aiplatform_dagster.rag.query.engine import AnswerKind, QueryEngine

GOLDEN = [
    # (question, document that answers it, phrases the answer must hold)
    ("how do I roll back a model", "mlops/model_rollback.txt", ["Roll back a model when"]),
    (
        "When does the on-call rotation hand over to the next engineer?",
        "operations/on_call_runbook.md",
        ["every Monday at 10:00 UTC"],
    ),
    (
        "When does a page escalate to the secondary?",
        "operations/on_call_runbook.md",
        ["escalates to the secondary after 15 minutes"],
    ),
    (
        "What does error AIP-4031 mean and how do I fix it?",
        "operations/troubleshooting.txt",
        ["output dimension differs", "re-run"],
    ),
    (
        "Which VM size do the GPU nodes use and how far does the pool scale?",
        "operations/gpu_node_pool.html",
        ["Standard_NC24ads_A100_v4", "from 0 to 4 nodes"],
    ),
    (
        "How are dense and BM25 results fused, and how many fused chunks reach the reranker?",
        "rag/hybrid_fusion.md",
        ["top 10 fused chunks"],
    ),
    ("how is the vector index backed up", "operations/backup_and_restore.txt", ["nightly"]),
]
HEADINGS = re.compile(r"^(?:#|When to roll back|MODEL ROLLBACK PROCEDURE|[=-]{3,})", re.MULTILINE)


@pytest.fixture
def engine(sample_retriever, embedder) -> QueryEngine:
    return QueryEngine(sample_retriever, embedder.count_tokens)


@pytest.mark.parametrize(("question", "doc_id", "facts"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_extractive_answers_read_well_and_hold_the_answer(
    engine: QueryEngine, question: str, doc_id: str, facts: list[str]
) -> None:
    answer = engine.ask(question)
    text = answer.text

    assert answer.kind is AnswerKind.EXTRACTIVE
    for fact in facts:
        assert fact in text, text
    assert doc_id in [c.doc_id for c in answer.citations], text
    assert not answer.flagged and not answer.invalid_citations
    markers = re.findall(r"\[(\d+)\]", text)
    assert len(markers) == len(set(markers)), f"a source is cited twice: {text}"
    assert not HEADINGS.search(text), text
    assert "(Rolling back" not in text and not re.search(r"(?:^|\. )\(", text), text
    _assert_lists_follow_their_stems(text)


def test_the_roll_back_answer_is_not_the_one_users_saw(engine: QueryEngine) -> None:
    text = engine.ask("how do I roll back a model").text
    assert not text.startswith("(Rolling back")
    assert text.count("[1]") == 1
    assert "for example:\n- a spike in prediction errors" in text


def _assert_lists_follow_their_stems(text: str) -> None:
    """Every line ending in ':' is followed by a list item."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        body = re.sub(r"\s*\[\d+\]$", "", line)
        if body.endswith(":"):
            assert re.match(r"^(?:-|\d+[.)]) ", following), f"stem without its list: {text}"
