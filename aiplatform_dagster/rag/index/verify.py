"""Checks a release must pass before any pointer names it: complete, aligned, searchable.

A probe searches a sample of chunks by their own vectors through the configured backend: each
must come back first. That catches vectors out of step with their ids, a backend that lost
rows, and a wrong dimension, at the cost of a few searches.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aiplatform_dagster.rag.index.releases import Release
from aiplatform_dagster.rag.index.vector_store import VectorStore

PROBES = 20


@dataclass(frozen=True)
class ReleaseCheck:
    name: str
    passed: bool
    detail: str


def verify_release(
    release: Release, expected_chunk_ids: Sequence[str], identity: str, vectors: VectorStore
) -> list[ReleaseCheck]:
    """Everything a reader relies on, checked on the release as readers will open it."""
    release.load()
    held = [chunk.chunk_id for chunk in release.chunks]
    missing = set(expected_chunk_ids) - set(held)
    extra = set(held) - set(expected_chunk_ids)
    checks = [
        ReleaseCheck(
            "holds_exactly_the_build_chunks",
            not missing and not extra and len(held) == len(set(held)),
            f"{len(held)} rows; {len(missing)} missing, {len(extra)} unexpected"
            + (f", e.g. {sorted(missing | extra)[0]}" if missing or extra else ""),
        ),
        ReleaseCheck(
            "built_by_the_configured_embedder",
            release.embedder_identity == identity,
            f"release {release.embedder_identity}, configured {identity}",
        ),
        ReleaseCheck(
            "backend_holds_every_row",
            vectors.count() == len(held),
            f"backend {vectors.count()}, release {len(held)}",
        ),
        ReleaseCheck(
            "keyword_index_holds_every_row",
            len(release.bm25) == len(held),
            f"BM25 {len(release.bm25)}, release {len(held)}",
        ),
    ]
    checks.append(_self_retrieval(release, vectors))
    return checks


def _self_retrieval(release: Release, vectors: VectorStore) -> ReleaseCheck:
    sample = [
        (ids[i], vectors_of[i])
        for ids, vectors_of in release.live_vectors()
        for i in range(min(len(ids), PROBES))
    ][:PROBES]
    if not sample:
        return ReleaseCheck("vectors_find_their_own_chunk", True, "empty release")
    queries = np.stack([vector for _, vector in sample])
    results = vectors.search_batch(queries, 1)
    wrong = [
        chunk_id
        for (chunk_id, _), hits in zip(sample, results, strict=True)
        if not hits or (hits[0].chunk_id != chunk_id and hits[0].score < 0.9999)
    ]
    return ReleaseCheck(
        "vectors_find_their_own_chunk",
        not wrong,
        f"{len(sample) - len(wrong)}/{len(sample)} probes came back first"
        + (f"; e.g. {wrong[0]} did not" if wrong else ""),
    )
