"""Index releases under hostile use: overlapping writers, readers during switches, kill -9,
corrupt files, a different embedder, and the sharing that makes small changes cheap.

Builds use the real steps and files; ``HashEmbedder`` (stand_ins.py) replaces the model so that
many builds and several processes fit in seconds.
"""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.rag.index.build import BuildError
from aiplatform_dagster.rag.index.releases import (
    CURRENT,
    EmbedderMismatch,
    IndexRepository,
    ReleaseError,
    Retention,
)
from aiplatform_dagster.rag.index.segments import CorruptIndexError
from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.retriever import Retriever, SearchMode
from aiplatform_dagster_tests.stand_ins import HashEmbedder, documents_of, text_vector, texts

SMALL = ChunkingConfig(chunk_tokens=64, overlap_tokens=0)


def run_ingest(root: Path, corpus: dict[str, str], **kwargs) -> str:
    summary = ingest(
        IndexRepository(root), documents_of(corpus), HashEmbedder(), config=SMALL, **kwargs
    )
    return summary.release.release_id


def own_text(doc_id: str, corpus: dict[str, str]) -> str:
    """The text a document's only chunk was embedded from: HashEmbedder finds it at cosine 1."""
    return f"{doc_id.title()}\n{corpus[doc_id]}"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_release_holds_chunks_bm25_and_vectors_of_one_build(tmp_path: Path) -> None:
    corpus = texts(30)
    release_id = run_ingest(tmp_path, corpus)
    repository = IndexRepository(tmp_path)
    assert repository.pointer(CURRENT) == release_id
    release = repository.open_pointer().load()
    manifest = release.manifest
    assert manifest["counts"]["documents"] == 30 == len(release.chunks)
    assert manifest["embedder"]["model_id"] == "test-hash-embedder"
    assert manifest["predecessor"] is None and manifest["corpus_hash"].startswith("sha256:")
    retriever = Retriever.from_release(release, HashEmbedder())
    for mode in SearchMode:
        assert retriever.search(own_text("doc-7", corpus), mode, 1)[0].chunk.doc_id == "doc-7"


def test_a_small_change_shares_everything_else_and_costs_a_small_segment(tmp_path: Path) -> None:
    corpus = texts(200)
    first = run_ingest(tmp_path, corpus)
    changed = {**corpus, "doc-3": "document 3 was rewritten", "doc-200": "a brand new document"}
    del changed["doc-9"]
    second = run_ingest(tmp_path, changed)
    repository = IndexRepository(tmp_path)
    release = repository.open(second)
    counts = release.manifest["counts"]
    assert (counts["kept"], counts["new"], counts["chunks"]) == (198, 2, 200)
    assert release.manifest["predecessor"] == first == release.manifest["base"]
    [old_segment, new_segment] = release.segments
    assert old_segment.segment_id == repository.open(first).segments[0].segment_id
    assert new_segment.rows == 2
    assert folder_bytes(new_segment.folder) < folder_bytes(old_segment.folder) / 4
    held = {chunk.doc_id for chunk in release.chunks}
    assert "doc-9" not in held and {"doc-3", "doc-200"} <= held
    retriever = Retriever.from_release(release, HashEmbedder())
    assert retriever.search(own_text("doc-3", changed), SearchMode.DENSE, 1)[0].chunk.doc_id == (
        "doc-3"
    )
    assert all(
        hit.chunk.doc_id != "doc-9" for hit in retriever.search("doc 9", SearchMode.BM25, 50)
    )
    # the removed row is masked, never returned by the shared segment
    query = text_vector(own_text("doc-9", corpus))
    assert all(hit.chunk_id != "doc-9#0" for hit in release.vectors.search(query, 200))


def test_readers_keep_their_release_while_the_next_is_published_and_retention_runs(
    tmp_path: Path,
) -> None:
    run_ingest(tmp_path, texts(20))
    repository = IndexRepository(tmp_path)
    reader = Retriever.from_release(repository.open_pointer().load(), HashEmbedder())
    question = own_text("doc-4", texts(20))
    before = [hit.chunk.doc_id for hit in reader.search(question)]
    assert before[0] == "doc-4"
    for version in ("v2", "v3"):
        run_ingest(tmp_path, texts(20, version), retention=Retention(keep=1, keep_days=0))
    assert len(repository.release_ids()) == 1  # the first release is deleted from disk
    assert [hit.chunk.doc_id for hit in reader.search(question)] == before


def test_a_pointer_moves_only_from_the_release_the_writer_saw(tmp_path: Path) -> None:
    first = run_ingest(tmp_path, texts(5))
    second = run_ingest(tmp_path, texts(5, "v2"))
    repository = IndexRepository(tmp_path)
    with pytest.raises(ReleaseError, match=r"moved from .* while release"):
        repository.move_pointer(first, expected=first)
    assert repository.pointer() == second
    repository.move_pointer(first, expected=second)  # a rollback
    assert repository.pointer() == first


def _racing_writer(root: str, version: str, rounds: int, errors: "multiprocessing.Queue") -> None:
    for number in range(rounds):
        try:
            run_ingest(Path(root), texts(40, f"{version}-{number}"))
        except ReleaseError as error:  # lost a race: clear message, nothing published
            errors.put(str(error))


def test_two_writers_at_once_leave_a_valid_current_release(tmp_path: Path) -> None:
    errors: multiprocessing.Queue = multiprocessing.Queue()
    writers = [
        multiprocessing.Process(target=_racing_writer, args=(str(tmp_path), v, 6, errors))
        for v in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert all("Run the build again" in message for message in messages)
    repository = IndexRepository(tmp_path)
    current = repository.open_pointer().load()
    assert len(current.chunks) == 40
    assert len(messages) < 12 and len(repository.release_ids()) == 12
    for release_id in repository.release_ids():
        assert len(repository.open(release_id).load().chunks) == 40


def _endless_builds(root: str) -> None:
    number = 0
    while True:
        number += 1
        run_ingest(Path(root), texts(300, f"v{number}"), retention=Retention(keep=2, keep_days=0))


def test_kill_9_at_any_moment_leaves_current_loadable_and_the_next_build_succeeds(
    tmp_path: Path,
) -> None:
    run_ingest(tmp_path, texts(300))
    repository = IndexRepository(tmp_path)
    for delay in (0.05, 0.2, 0.35, 0.5, 0.8, 1.3):
        writer = multiprocessing.Process(target=_endless_builds, args=(str(tmp_path),))
        writer.start()
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        release = repository.open_pointer().load()
        assert len(release.chunks) == 300
    after = run_ingest(tmp_path, texts(300, "after"))
    assert repository.pointer() == after


def _switcher(root: str, stop_at: float) -> None:
    number = 0
    while time.monotonic() < stop_at:
        number += 1
        run_ingest(Path(root), texts(50, f"v{number}"), retention=Retention(keep=2, keep_days=0))


def test_opening_the_current_release_while_another_process_switches_never_fails(
    tmp_path: Path,
) -> None:
    run_ingest(tmp_path, texts(50))
    repository = IndexRepository(tmp_path)
    writer = multiprocessing.Process(target=_switcher, args=(str(tmp_path), time.monotonic() + 6))
    writer.start()
    opened, seen = 0, set()
    while writer.is_alive():
        release = repository.open_pointer().load()
        assert len(Retriever.from_release(release, HashEmbedder()).search("document 1", k=3)) == 3
        opened += 1
        seen.add(release.release_id)
    writer.join()
    assert writer.exitcode == 0
    assert opened > 20 and len(seen) > 3


def test_queries_with_another_embedder_are_refused_naming_both(tmp_path: Path) -> None:
    run_ingest(tmp_path, texts(5))
    release = IndexRepository(tmp_path).open_pointer()

    class OtherEmbedder(HashEmbedder):
        model_id = "other-model"

    with pytest.raises(EmbedderMismatch) as error:
        from aiplatform_dagster.models.identity import embedder_identity

        other = OtherEmbedder()
        release.check_embedder(embedder_identity(other), other.model_id)
    message = str(error.value)
    assert "test-hash-embedder" in message and "other-model" in message


def test_retrained_weights_at_the_same_path_are_a_different_embedder(tmp_path: Path) -> None:
    from aiplatform_dagster.models.embedders import packaged_minilm_path
    from aiplatform_dagster.models.identity import embedder_identity

    class FolderEmbedder(HashEmbedder):
        def __init__(self, folder: Path) -> None:
            self.model_path = str(folder)

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(Path(packaged_minilm_path(), "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"weights v1")
    before = embedder_identity(FolderEmbedder(folder))
    (folder / "model.safetensors").write_bytes(b"weights v2")
    after = embedder_identity(FolderEmbedder(folder))
    assert before != after and before.split("@")[0] == after.split("@")[0]


def test_a_corrupt_release_is_reported_with_its_file_and_the_next_build_reuses_nothing(
    tmp_path: Path,
) -> None:
    corpus = texts(30)
    run_ingest(tmp_path, corpus)
    repository = IndexRepository(tmp_path)
    [segment] = repository.open_pointer().segments
    vectors = segment.folder / "vectors.npy"
    vectors.chmod(0o644)
    with vectors.open("r+b") as handle:
        handle.truncate(vectors.stat().st_size // 2)
    with pytest.raises(CorruptIndexError) as error:
        repository.open_pointer().load()
    assert str(vectors) in str(error.value) and "Build a new release" in str(error.value)
    rebuilt = ingest(repository, documents_of(corpus), HashEmbedder(), config=SMALL)
    assert rebuilt.release.manifest["base"] is None
    assert "unreadable" in rebuilt.release.manifest["base_note"]
    assert len(rebuilt.release.load().chunks) == 30


def test_a_corrupt_manifest_names_the_file(tmp_path: Path) -> None:
    release_id = run_ingest(tmp_path, texts(3))
    manifest = tmp_path / "releases" / release_id / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(CorruptIndexError, match=r"manifest\.json"):
        IndexRepository(tmp_path).open(release_id)


def test_a_step_without_its_inputs_says_which_step_to_run(tmp_path: Path) -> None:
    from aiplatform_dagster.rag.index.build import Build, assemble_release

    with pytest.raises(BuildError, match="run document_chunks"):
        assemble_release(Build(IndexRepository(tmp_path), "empty-build"))


def test_no_release_yet_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="make ingest"):
        IndexRepository(tmp_path).open_pointer()


def test_an_empty_corpus_is_a_valid_empty_release(tmp_path: Path) -> None:
    release = IndexRepository(tmp_path).open(run_ingest(tmp_path, {}))
    assert release.load().chunks == [] and release.vectors.count() == 0
    assert Retriever.from_release(release, HashEmbedder()).search("anything") == []


def test_many_small_releases_are_compacted_into_one_segment(tmp_path: Path) -> None:
    corpus = texts(100)
    run_ingest(tmp_path, corpus)
    for number in range(12):
        corpus = {**corpus, f"doc-{number}": f"edit {number} of document {number}"}
        run_ingest(tmp_path, corpus)
    release = IndexRepository(tmp_path).open_pointer().load()
    assert len(release.segments) <= 8
    assert len(release.chunks) == 100
    query = text_vector(own_text("doc-11", corpus))
    [best] = release.vectors.search(query, 1)
    assert release.chunk_index[best.chunk_id].doc_id == "doc-11"
    assert np.isclose(best.score, 1.0, atol=1e-5)


def test_a_release_counted_with_another_analyzer_is_refused_for_queries(tmp_path: Path) -> None:
    release_id = run_ingest(tmp_path, texts(3))
    path = tmp_path / "releases" / release_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["bm25"]["analyzer"] = "analyzer-0"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ReleaseError, match=r"analyzer-0.*build a new release"):
        IndexRepository(tmp_path).open_pointer()
