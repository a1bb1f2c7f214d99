"""The rule router must send each kind of query to the search that suits it, and say why."""

import pytest

from aiplatform_dagster.rag.query.preprocess import prepare_query
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster.rag.query.router import (
    RouteDecision,
    Router,
    RoutingRules,
    RuleRouter,
    route,
)

LONG_QUESTION = (
    "How should our team decide when to rebuild the search index after many documents "
    "have been edited by different people?"
)


def test_a_ticket_id_goes_to_keyword_search_with_a_reason() -> None:
    decision = route(prepare_query("AIP-4031"))

    assert decision.mode is SearchMode.BM25
    assert "AIP-4031" in decision.reason
    assert decision.reason.startswith("Keyword search")


@pytest.mark.parametrize(
    "raw", ["incidents 2024-01-05", "release notes v1.2.3", "settings.py timeout", "3fa9c2e1b"]
)
def test_short_queries_with_exact_terms_go_to_keyword_search(raw: str) -> None:
    assert route(prepare_query(raw)).mode is SearchMode.BM25


def test_a_quoted_phrase_goes_to_keyword_search_even_in_a_long_query() -> None:
    query = prepare_query(f'{LONG_QUESTION} "connection pool exhausted"')

    decision = route(query)

    assert decision.mode is SearchMode.BM25
    assert "connection pool exhausted" in decision.reason


def test_a_long_natural_language_question_goes_to_semantic_search() -> None:
    decision = route(prepare_query(LONG_QUESTION))

    assert decision.mode is SearchMode.DENSE
    assert decision.reason.startswith("Semantic search")


@pytest.mark.parametrize(
    "raw",
    [
        "vacation policy for contractors",
        "how do I get access to the staging cluster",
        "what changed for AIP-4031 in the release process last quarter",
    ],
)
def test_medium_queries_and_long_queries_with_ids_go_to_hybrid_search(raw: str) -> None:
    decision = route(prepare_query(raw))

    assert decision.mode is SearchMode.HYBRID
    assert decision.reason.startswith("Hybrid search")


@pytest.mark.parametrize(
    "raw",
    [
        "как мне получить доступ к тестовому кластеру после того как мой пароль истёк вчера",
        "我想知道如何在公司的电脑上重置我的令牌以及在哪里可以找到安全设置",
    ],
)
def test_long_non_latin_questions_route_to_hybrid_and_name_the_script(raw: str) -> None:
    query = prepare_query(raw)

    decision = route(query)

    assert query.word_count >= RoutingRules().semantic_min_words
    assert decision.mode is SearchMode.HYBRID
    assert query.script in decision.reason


def test_a_multilingual_embedder_can_take_any_script() -> None:
    query = prepare_query(
        "как мне получить доступ к тестовому кластеру после того как мой пароль истёк вчера"
    )

    assert route(query, RoutingRules(semantic_scripts=None)).mode is SearchMode.DENSE


def test_thresholds_are_configurable() -> None:
    query = prepare_query("how do I get access to the staging cluster")

    assert route(query, RoutingRules(semantic_min_words=8)).mode is SearchMode.DENSE
    assert route(prepare_query("AIP-4031 status"), RoutingRules(keyword_max_words=1)).mode is (
        SearchMode.HYBRID
    )


def test_inconsistent_thresholds_are_rejected() -> None:
    with pytest.raises(ValueError, match="semantic_min_words"):
        RoutingRules(keyword_max_words=10, semantic_min_words=5)


def test_every_decision_has_a_sentence_as_reason() -> None:
    for raw in ["AIP-4031", LONG_QUESTION, "vacation policy", '"exact words"']:
        reason = route(prepare_query(raw)).reason
        assert reason[0].isupper()
        assert reason.endswith(".")


def test_rule_router_is_a_router_that_applies_its_rules() -> None:
    router: Router = RuleRouter(RoutingRules(semantic_min_words=8))
    query = prepare_query("how do I get access to the staging cluster")

    decision = router.route(query)

    assert isinstance(decision, RouteDecision)
    assert decision == route(query, RoutingRules(semantic_min_words=8))
    assert decision.mode is SearchMode.DENSE
