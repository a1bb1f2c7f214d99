"""The routed evaluation mode scores what users get: the router's choice, as ``ask`` retrieves."""

from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode, document_rankers
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.retriever import Retriever


def test_routed_follows_the_router_and_matches_what_ask_cites(sample_repository, embedder) -> None:
    engine = QueryEngine(
        Retriever.from_release(sample_repository.open_pointer(), embedder), embedder.count_tokens
    )
    modes = [EvalMode.ROUTED, EvalMode.BM25, EvalMode.DENSE, EvalMode.HYBRID]
    rankers, skipped = document_rankers(engine, modes, depth=10)
    assert skipped == {}

    code = "AIP-4031"  # a short exact-match query: the router sends it to keyword search
    assert rankers["routed"](code) == rankers["bm25"](code)
    question = "how is the on-call rotation handed over"  # seven plain words: hybrid
    assert rankers["routed"](question) == rankers["hybrid"](question)
    assert rankers["routed"](question) != rankers["dense"](question)
    answer = engine.ask(question)
    assert answer.route.mode.value == "hybrid"
    assert answer.sources[0]["doc_id"] == rankers["routed"](question)[0]
