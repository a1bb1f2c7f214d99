"""Query routing: pick keyword, semantic or hybrid search per query, and say why.

Keyword search finds IDs, codes and quoted phrases verbatim, which embeddings blur; a long
natural-language question is what embeddings are for; everything in between gets both.
The rules are plain data so they can be tuned per deployment, and routing sits behind a
``Router`` protocol so a trained classifier can replace the rules without touching callers.
"""

from dataclasses import dataclass
from typing import Protocol

from aiplatform_dagster.rag.query.preprocess import PreparedQuery, Script
from aiplatform_dagster.rag.query.retriever import SearchMode

_SHOWN_TERMS = 3


@dataclass(frozen=True)
class RoutingRules:
    """Thresholds of the rule-based router."""

    keyword_max_words: int = 4
    """Queries with exact-match terms and at most this many words go to keyword search."""
    semantic_min_words: int = 12
    """Queries without exact-match terms and at least this many words go to semantic search."""
    quotes_force_keyword: bool = True
    """A quoted phrase asks for verbatim matching, so it routes to keyword search at any length."""
    semantic_scripts: frozenset[Script] | None = frozenset({Script.LATIN})
    """Scripts the embedding model reads well (the default MiniLM is English-only); a long
    query in another script gets hybrid search instead. None trusts the model with any script."""

    def __post_init__(self) -> None:
        if self.keyword_max_words < 0:
            raise ValueError(f"keyword_max_words must be >= 0, got {self.keyword_max_words}")
        if self.semantic_min_words <= self.keyword_max_words:
            raise ValueError(
                f"semantic_min_words ({self.semantic_min_words}) must be greater than "
                f"keyword_max_words ({self.keyword_max_words})"
            )


DEFAULT_RULES = RoutingRules()


@dataclass(frozen=True)
class RouteDecision:
    mode: SearchMode
    reason: str
    """One sentence for the user: which search ran and why."""


class Router(Protocol):
    """Anything that picks a search mode for a prepared query."""

    version: str | None
    """The registered model version it was loaded from; None for rules."""

    def route(self, query: PreparedQuery) -> RouteDecision: ...


class RuleRouter:
    """The ``Router`` built from ``RoutingRules``."""

    version: str | None = None

    def __init__(self, rules: RoutingRules = DEFAULT_RULES) -> None:
        self.rules = rules

    def route(self, query: PreparedQuery) -> RouteDecision:
        return route(query, self.rules)


def route(query: PreparedQuery, rules: RoutingRules = DEFAULT_RULES) -> RouteDecision:
    """Keyword for short exact-match queries, semantic for long questions, hybrid otherwise."""
    words = _words(query.word_count)
    if query.quoted_phrases and rules.quotes_force_keyword:
        return RouteDecision(
            SearchMode.BM25,
            f"Keyword search, because the query quotes {_list(query.quoted_phrases)}, "
            "which should be matched verbatim.",
        )
    if query.exact_terms:
        terms = _list(query.exact_terms)
        if query.word_count <= rules.keyword_max_words:
            return RouteDecision(
                SearchMode.BM25,
                f"Keyword search, because the query is short ({words}) and names {terms}, "
                "which keyword matching finds verbatim.",
            )
        return RouteDecision(
            SearchMode.HYBRID,
            f"Hybrid search, because the query names {terms} but is long ({words}), "
            "so exact keyword matches are blended with semantic matches.",
        )
    if query.word_count >= rules.semantic_min_words:
        if rules.semantic_scripts is None or query.script in rules.semantic_scripts:
            return RouteDecision(
                SearchMode.DENSE,
                f"Semantic search, because the query is a long natural-language question "
                f"({words}) without IDs, codes or quoted phrases.",
            )
        return RouteDecision(
            SearchMode.HYBRID,
            f"Hybrid search, because the query is long ({words}) but written in "
            f"{query.script} script, which the embedding model is not configured for, "
            "so keyword matches are blended in.",
        )
    return RouteDecision(
        SearchMode.HYBRID,
        f"Hybrid search, because the query ({words}) has no IDs, codes or quoted phrases "
        "and is too short to rely on meaning alone.",
    )


def _words(count: int) -> str:
    return f"{count} word" if count == 1 else f"{count} words"


def _list(terms: list[str]) -> str:
    shown = ", ".join(f"'{term}'" for term in terms[:_SHOWN_TERMS])
    hidden = len(terms) - _SHOWN_TERMS
    return f"{shown} and {hidden} more" if hidden > 0 else shown
