"""A candidate release: the current release's chunks and keyword counts, re-embedded by another
embedder, beside the live one; no reader sees it until a pointer names it."""

from pathlib import Path

from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import reembed_release
from aiplatform_dagster.rag.index.releases import CANDIDATE, IndexRepository, Retention
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest


def test_reembedded_release_keeps_chunks_and_keywords_and_moves_no_pointer(
    tmp_path: Path, corpus_dir: Path, embedder: SentenceTransformerEmbedder
) -> None:
    repository = IndexRepository(tmp_path / "index")
    documents, _ = load_documents(corpus_dir)
    live = ingest(repository, documents, embedder).release
    other = SentenceTransformerEmbedder(name="renamed-minilm")  # same weights, another identity

    candidate, report = reembed_release(repository, live, other, embedder_identity(other))

    assert repository.pointer() == live.release_id
    assert candidate.embedder_identity == embedder_identity(other) != live.embedder_identity
    assert candidate.manifest["reembedded_from"] == live.release_id
    assert [c.chunk_id for c in candidate.chunks] == [c.chunk_id for c in live.chunks]
    assert report.computed == len(live.chunks)
    assert candidate.bm25.search("error code AIP-4031", 3) == live.bm25.search(
        "error code AIP-4031", 3
    )
    [question] = other.encode(["How long before a page escalates?"])
    best = candidate.vectors.search(question, 1)[0]
    assert candidate.chunk_index[best.chunk_id].doc_id == "runbooks/paging.md"
    assert {d.doc_id for d in candidate.documents} == {d.doc_id for d in live.documents}


def test_retention_keeps_the_candidate_a_pointer_names(
    tmp_path: Path, corpus_dir: Path, embedder: SentenceTransformerEmbedder
) -> None:
    repository = IndexRepository(tmp_path / "index")
    documents, _ = load_documents(corpus_dir)
    live = ingest(repository, documents, embedder).release
    other = SentenceTransformerEmbedder(name="renamed-minilm")
    candidate, _ = reembed_release(repository, live, other, embedder_identity(other))
    repository.move_pointer(candidate.release_id, None, name=CANDIDATE)
    ingest(repository, documents[:2], embedder)  # newer releases push both out of "keep"
    ingest(repository, documents[:1], embedder)

    deleted = repository.apply_retention(Retention(keep=1, keep_days=0))

    assert live.release_id in deleted
    assert candidate.release_id in repository.release_ids()
    assert repository.open(candidate.release_id).load().chunks
