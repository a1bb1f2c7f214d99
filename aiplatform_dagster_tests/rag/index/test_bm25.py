"""BM25Index must score like the textbook formula and like rank-bm25, and survive a restart."""

import math
from collections import Counter

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from aiplatform_dagster.rag.index.bm25 import BM25Index, term_counts
from aiplatform_dagster.rag.index.text_analysis import analyze

CORPUS = [
    "Hybrid search combines BM25 keyword search with dense vector search.",
    "BM25 ranks documents by term frequency and inverse document frequency.",
    "Dense retrieval embeds queries and documents into the same vector space.",
    "The reranker reorders the top search results with a cross-encoder.",
    "Chunking splits long documents into overlapping passages before indexing.",
    "The vector index is rebuilt nightly by a Dagster asset.",
    "Search quality is measured with recall and nDCG on a golden set.",
    "Reciprocal rank fusion merges the keyword and vector search result lists.",
    "Stop words such as the and of carry little search signal.",
    "Stemming maps indexing, indexes and indexed to one term.",
    "The search API returns chunk ids with scores, best first.",
    "Query latency is dominated by the reranker, not by BM25 search.",
    "Embeddings are cached in Redis so repeated queries are cheap.",
    "A golden set of queries guards search relevance against regressions.",
    "Weaviate stores vectors; FAISS serves the local search fallback.",
    "Document frequency counts how many documents contain a term.",
    "Long documents are normalised by their length relative to the average.",
    "Search search search: a repeated term saturates under BM25.",
    "Incident reviews note which search queries failed and why.",
    "",
]
QUERIES = [
    "bm25 search",
    "vector search index",
    "document frequency of a term",
    "reranker latency",
    "search search",
    "golden queries regressions",
    "nothing here matches zzz",
]


def ids(n: int) -> list[str]:
    return [f"doc-{i}" for i in range(n)]


def lucene_bm25(query: list[str], docs: list[list[str]], k1: float, b: float) -> list[float]:
    """Textbook BM25 with Lucene's idf, written for clarity rather than speed."""
    avgdl = sum(map(len, docs)) / len(docs)
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in query:
            df = sum(term in other for other in docs)
            if tf[term]:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                norm = k1 * (1 - b + b * len(doc) / avgdl)
                score += idf * tf[term] * (k1 + 1) / (tf[term] + norm)
        scores.append(score)
    return scores


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (1.2, 0.0)])
def test_okapi_idf_scores_equal_rank_bm25(k1, b):
    tokens = [analyze(text) for text in CORPUS]
    index = BM25Index.from_tokens(ids(len(CORPUS)), tokens, k1=k1, b=b, idf="okapi")
    reference = BM25Okapi(tokens, k1=k1, b=b, epsilon=0.25)
    for query in QUERIES:
        np.testing.assert_allclose(
            index.scores(query), reference.get_scores(analyze(query)), rtol=0, atol=1e-6
        )


def test_default_scores_and_ranking_equal_the_textbook_formula():
    tokens = [analyze(text) for text in CORPUS]
    index = BM25Index.build(ids(len(CORPUS)), CORPUS)
    for query in QUERIES:
        expected = lucene_bm25(analyze(query), tokens, k1=0.9, b=0.4)
        np.testing.assert_allclose(index.scores(query), expected, rtol=0, atol=1e-9)
        ranked = sorted((i for i, s in enumerate(expected) if s > 0), key=lambda i: -expected[i])
        assert [hit.chunk_id for hit in index.search(query, k=5)] == [
            f"doc-{i}" for i in ranked[:5]
        ]


def test_hand_computed_scores_on_a_tiny_corpus():
    index = BM25Index.build(["a", "b", "c"], ["fox dog", "fox", "cat dog dog"])
    # N = 3, avgdl = 2, df(dog) = 2, k1 = 0.9, b = 0.4.
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    doc_a = idf * 1 * 1.9 / (1 + 0.9 * (0.6 + 0.4 * 2 / 2))
    doc_c = idf * 2 * 1.9 / (2 + 0.9 * (0.6 + 0.4 * 3 / 2))
    np.testing.assert_allclose(index.scores("dog"), [doc_a, 0.0, doc_c])
    hits = index.search("dog")
    assert [(hit.chunk_id, hit.score) for hit in hits] == [
        ("c", pytest.approx(doc_c)),
        ("a", pytest.approx(doc_a)),
    ]


EXACT_TOKEN_CORPUS = {
    "ticket": "Incident AIP-4031: the reranker timed out under load.",
    "other-ticket": "Incident AIP-4030: the reranker timed out under load again.",
    "ticket-parts": "AIP planning: AIP 4031 and AIP 4031 are unrelated line items.",
    "release": "Version v1.2.3 shipped on 2024-01-05 with a faster index.",
    "next-release": "Version v1.2.4 shipped on 2024-01-06 with a faster reranker.",
    "old-release": "Version v1.3.2 shipped on 2023-01-05; see the 01 05 notes for 2024.",
    "indexing": "The indexes are rebuilt nightly.",
    "cyrillic": "Поиск документов по ключевым словам.",
    "filler": "Nothing about tickets or releases here.",
}


@pytest.fixture(scope="module")
def exact_index() -> BM25Index:
    return BM25Index.build(list(EXACT_TOKEN_CORPUS), list(EXACT_TOKEN_CORPUS.values()))


@pytest.mark.parametrize(
    ("query", "expected", "distractors"),
    [
        ("AIP-4031", "ticket", {"other-ticket", "ticket-parts"}),
        ("what shipped on 2024-01-05?", "release", {"next-release", "old-release"}),
        ("v1.2.3", "release", {"next-release", "old-release"}),
    ],
)
def test_exact_tokens_rank_their_document_above_look_alikes(
    exact_index, query, expected, distractors
):
    hits = exact_index.search(query)
    assert hits[0].chunk_id == expected
    scores = dict(zip(exact_index.doc_ids, exact_index.scores(query), strict=True))
    assert all(scores[expected] > scores[other] for other in distractors)


def test_a_word_inside_an_id_still_matches_weakly(exact_index):
    assert "ticket" in {hit.chunk_id for hit in exact_index.search("aip")}


def test_stemming_matches_other_inflections(exact_index):
    assert exact_index.search("indexing")[0].chunk_id == "indexing"


def test_stop_words_do_not_score(exact_index):
    assert not exact_index.scores("the and of on with").any()
    assert exact_index.search("the and of on with") == []
    np.testing.assert_array_equal(
        exact_index.scores("what is the reranker"), exact_index.scores("reranker")
    )


def test_non_latin_queries_do_not_crash(exact_index):
    assert exact_index.search("ключевым словам")[0].chunk_id == "cyrillic"
    assert exact_index.search("東京の検索") == []


def test_empty_query_scores_zero(exact_index):
    assert exact_index.scores("").shape == (len(EXACT_TOKEN_CORPUS),)
    assert not exact_index.scores("").any()
    assert exact_index.search("") == []


def test_search_returns_at_most_k_matching_docs(exact_index):
    assert len(exact_index.search("shipped", k=2)) == 2
    assert len(exact_index.search("shipped", k=100)) == 3
    assert exact_index.search("shipped", k=0) == []


def test_equal_scores_keep_corpus_order_even_at_the_cut():
    index = BM25Index.build(["x", "a", "b", "c"], ["cat", "dog fox", "dog fox", "dog fox"])
    assert [hit.chunk_id for hit in index.search("dog", k=2)] == ["a", "b"]


def test_empty_corpus_builds_and_finds_nothing():
    index = BM25Index.build([], [])
    assert len(index) == 0
    assert index.vocabulary_size == 0
    assert index.search("anything") == []


def test_size_properties(exact_index):
    assert len(exact_index) == len(EXACT_TOKEN_CORPUS)
    assert exact_index.doc_ids == list(EXACT_TOKEN_CORPUS)
    assert exact_index.vocabulary_size == len(
        {term for text in EXACT_TOKEN_CORPUS.values() for term in analyze(text)}
    )


def test_inconsistent_input_is_rejected():
    with pytest.raises(ValueError, match="2 doc ids but 1 texts"):
        BM25Index.build(["a", "b"], ["one text"])
    with pytest.raises(ValueError, match="unique"):
        BM25Index.build(["a", "a"], ["one", "two"])


def test_counts_combined_from_parts_score_exactly_like_one_build():
    """A release builds BM25 from its segments' term counts: it must match a build from text."""
    whole = BM25Index.build(ids(len(CORPUS)), CORPUS, k1=1.5, b=0.75, idf="okapi")
    vocabulary, counts = term_counts([analyze(text) for text in CORPUS])
    combined = BM25Index.from_counts(
        ids(len(CORPUS)), vocabulary, counts, k1=1.5, b=0.75, idf="okapi"
    )
    for query in ("bm25 search", "reranker load", "AIP-4031"):
        np.testing.assert_allclose(combined.scores(query), whole.scores(query))
    with pytest.raises(ValueError, match="expected"):
        BM25Index.from_counts(ids(2), vocabulary, counts)
