"""Okapi BM25 over precomputed sparse weights, so a query costs a few posting-list reads.

Every (term, document) BM25 contribution is computed once at build time and stored in a
term-major CSR matrix; scoring a query is then summing the rows of its terms, not a Python loop
over documents. Two IDF forms: "lucene" (the default, ln(1 + (N - df + 0.5) / (df + 0.5)), never
negative) and "okapi" (rank-bm25's BM25Okapi, floored at epsilon * mean idf, kept so our scores
can be checked against that library).
"""

from collections.abc import Callable, Sequence
from typing import Literal, Self

import numpy as np
import scipy.sparse as sp

from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.index.text_analysis import analyze

Analyzer = Callable[[str], list[str]]
IdfKind = Literal["lucene", "okapi"]

# rank-bm25's BM25Okapi default: negative idfs are raised to this fraction of the mean idf.
OKAPI_EPSILON = 0.25


def _idf(doc_freq: np.ndarray, n_docs: int, kind: IdfKind) -> np.ndarray:
    """Inverse document frequency per term id."""
    if kind == "lucene":
        return np.log1p((n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
    idf = np.log(n_docs - doc_freq + 0.5) - np.log(doc_freq + 0.5)
    if idf.size:
        idf[idf < 0] = OKAPI_EPSILON * idf.mean()
    return idf


def term_counts(token_lists: Sequence[Sequence[str]]) -> tuple[list[str], sp.csr_matrix]:
    """The vocabulary in first-seen order and a (terms, docs) matrix of term frequencies."""
    vocabulary: dict[str, int] = {}
    term_ids = np.fromiter(
        (vocabulary.setdefault(t, len(vocabulary)) for tokens in token_lists for t in tokens),
        dtype=np.int64,
    )
    doc_len = np.fromiter((len(tokens) for tokens in token_lists), np.int64, len(token_lists))
    doc_of_token = np.repeat(np.arange(len(token_lists), dtype=np.int64), doc_len)
    # COO -> CSR sums duplicate (term, doc) pairs into term frequencies.
    coo = sp.coo_matrix(
        (np.ones(term_ids.size), (term_ids, doc_of_token)),
        shape=(len(vocabulary), len(token_lists)),
    )
    return list(vocabulary), coo.tocsr()


class BM25Index:
    """An immutable BM25 index over chunk ids; build it with `build` or `from_tokens`."""

    def __init__(
        self,
        doc_ids: list[str],
        vocabulary: dict[str, int],
        weights: sp.csr_matrix,
        *,
        k1: float,
        b: float,
        idf: IdfKind,
        analyzer: Analyzer,
    ) -> None:
        self._doc_ids = doc_ids
        self._vocabulary = vocabulary
        self._weights = weights
        self.k1 = k1
        self.b = b
        self.idf = idf
        self._analyzer = analyzer

    @classmethod
    def build(
        cls,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        *,
        k1: float = 0.9,
        b: float = 0.4,
        idf: IdfKind = "lucene",
        analyzer: Analyzer = analyze,
    ) -> Self:
        """Analyse texts and index them; `analyzer` is kept to analyse queries the same way."""
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(texts)} texts")
        tokens = [analyzer(text) for text in texts]
        return cls.from_tokens(doc_ids, tokens, k1=k1, b=b, idf=idf, analyzer=analyzer)

    @classmethod
    def from_tokens(
        cls,
        doc_ids: Sequence[str],
        token_lists: Sequence[Sequence[str]],
        *,
        k1: float = 0.9,
        b: float = 0.4,
        idf: IdfKind = "lucene",
        analyzer: Analyzer = analyze,
    ) -> Self:
        """Index documents already split into terms by `analyzer` (which queries will use)."""
        if len(doc_ids) != len(token_lists):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(token_lists)} token lists")
        vocabulary, counts = term_counts(token_lists)
        return cls.from_counts(doc_ids, vocabulary, counts, k1=k1, b=b, idf=idf, analyzer=analyzer)

    @classmethod
    def from_counts(
        cls,
        doc_ids: Sequence[str],
        vocabulary: Sequence[str],
        counts: sp.csr_matrix,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        idf: IdfKind = "lucene",
        analyzer: Analyzer = analyze,
    ) -> Self:
        """Index from term frequencies, a (terms, docs) matrix: how a release combines the
        counts its segments stored, without analysing any text again."""
        if counts.shape != (len(vocabulary), len(doc_ids)):
            raise ValueError(
                f"counts have shape {counts.shape}, expected (terms, docs) = "
                f"({len(vocabulary)}, {len(doc_ids)})"
            )
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("doc ids must be unique: a hit must name exactly one chunk")
        if idf not in ("lucene", "okapi"):
            raise ValueError(f"idf must be 'lucene' or 'okapi', not {idf!r}")
        weights = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        weights.sum_duplicates()
        doc_len = np.asarray(weights.sum(axis=0)).ravel()
        n_docs = len(doc_ids)
        tf = weights.data
        doc_freq = np.diff(weights.indptr)
        avgdl = doc_len.mean() if doc_len.sum() else 1.0  # all-empty corpus: nothing to normalise
        length_norm = k1 * (1 - b + b * doc_len[weights.indices] / avgdl)
        idf_of_entry = np.repeat(_idf(doc_freq, n_docs, idf), doc_freq)
        weights.data = idf_of_entry * tf * (k1 + 1) / (tf + length_norm)
        terms = {term: i for i, term in enumerate(vocabulary)}
        return cls(list(doc_ids), terms, weights, k1=k1, b=b, idf=idf, analyzer=analyzer)

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def doc_ids(self) -> list[str]:
        """Chunk ids in the order `scores` reports them."""
        return list(self._doc_ids)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocabulary)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document, in `doc_ids` order; a repeated query term counts twice."""
        vocabulary = self._vocabulary
        term_ids = [vocabulary[t] for t in self._analyzer(query) if t in vocabulary]
        if not term_ids:
            return np.zeros(len(self._doc_ids))
        return np.asarray(self._weights[term_ids].sum(axis=0)).ravel()

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The k best-scoring documents, best first; documents sharing no term are never hits."""
        if k <= 0:
            return []
        scores = self.scores(query)
        if k < len(scores):
            # Introselect for the k-th best score, then keep every doc tied with it, so that which
            # of several equal docs makes the cut does not depend on the selection algorithm.
            kth_best = -np.partition(-scores, k - 1)[k - 1]
            candidates = np.flatnonzero((scores >= kth_best) & (scores > 0))
        else:
            candidates = np.flatnonzero(scores > 0)
        # Best score first; equal scores keep corpus order so results are reproducible.
        ranked = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [Hit(self._doc_ids[i], float(scores[i])) for i in ranked]
