"""Embedding a build in shards, as scale-out ingestion does on many GPU nodes: shards split the
new rows without overlap, a release built from them equals one built on one machine, a missing
shard is made up for, and a shard of another model or a damaged shard file is refused by name.

``HashEmbedder`` (stand_ins.py) replaces the model; ``CountingEmbedder`` counts what it embeds.
"""

import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.models.embedders import Progress
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import (
    Build,
    BuildError,
    assemble_release,
    count_build_terms,
    plan_build,
    publish_release,
)
from aiplatform_dagster.rag.index.embedding import (
    SHARDS_DIR,
    Shard,
    embed_build,
    embed_shard,
    shard_keys,
    shard_of,
)
from aiplatform_dagster.rag.index.releases import IndexRepository, Retention
from aiplatform_dagster.rag.index.segments import CorruptIndexError
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend
from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
from aiplatform_dagster.rag.ingest.pipeline import chunk_for
from aiplatform_dagster_tests.stand_ins import HashEmbedder, documents_of, texts

SMALL = ChunkingConfig(chunk_tokens=48, overlap_tokens=0)
SHARDS = 4


class CountingEmbedder(HashEmbedder):
    """HashEmbedder that counts the texts it was asked to embed."""

    def __init__(self) -> None:
        self.embedded = 0

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        self.embedded += len(texts)
        return super().encode(texts, progress)


class OtherModel(HashEmbedder):
    model_id = "another-model"


def corpus(n: int = 40) -> dict[str, str]:
    """``n`` documents of one to three chunks each (SMALL chunks)."""
    return {
        doc_id: f"{text}. " + " ".join(f"word{i}x{j}" for j in range(30 + 10 * (i % 9)))
        for i, (doc_id, text) in enumerate(texts(n).items())
    }


def planned(repository: IndexRepository, build_id: str, documents: dict[str, str]) -> Build:
    """A build through document_chunks: documents stored, chunked, planned against current."""
    embedder = HashEmbedder()
    build = Build(repository, build_id)
    docs = documents_of(documents)
    build.write_documents(docs)
    chunks = chunk_for(docs, embedder, SMALL).chunks
    plan_build(build, chunks, embedder_identity(embedder), embedder.model_id, SMALL)
    return build


def released(build: Build, embedder: HashEmbedder) -> np.ndarray:
    """Finish the build (embed what the shards did not, count terms, assemble); its vectors."""
    embed_build(build, embedder, embedder_identity(embedder))
    count_build_terms(build)
    release = assemble_release(build)
    return np.concatenate([np.asarray(s.vectors.vectors) for s in release.segments])


def test_a_document_s_shard_is_the_same_in_every_process() -> None:
    doc_ids = [f"guides/doc-{i}.md" for i in range(2000)]
    here = [shard_of(doc_id, 16) for doc_id in doc_ids[:50]]
    script = (
        "from aiplatform_dagster.rag.index.embedding import shard_of;"
        "print([shard_of(f'guides/doc-{i}.md', 16) for i in range(50)])"
    )
    for seed in ("0", "12345"):  # Python's own str hash differs with the seed; ours must not
        output = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert output.strip() == str(here)
    sizes = Counter(shard_of(doc_id, 16) for doc_id in doc_ids)
    assert set(sizes) == set(range(16))
    assert max(sizes.values()) < 1.4 * len(doc_ids) / 16  # no shard holds far more than its part


def test_shard_keys_are_partition_keys_that_parse_back() -> None:
    assert shard_keys(3) == ["000-of-003", "001-of-003", "002-of-003"]
    assert Shard.parse("011-of-016") == Shard(11, 16)
    with pytest.raises(ValueError, match="shard keys look like 003-of-016"):
        Shard.parse("11/16")
    with pytest.raises(ValueError, match="need 0 <= index < count"):
        Shard(16, 16)


def test_shards_split_the_new_rows_and_the_release_equals_one_built_on_one_machine(
    tmp_path: Path,
) -> None:
    documents = corpus()
    whole = released(planned(IndexRepository(tmp_path / "one"), "one", documents), HashEmbedder())

    repository = IndexRepository(tmp_path / "sharded")
    build = planned(repository, "plan", documents)
    chunks = build.chunks()
    reports = [
        embed_shard(build, Shard.parse(key), HashEmbedder(), embedder_identity(HashEmbedder()))
        for key in shard_keys(SHARDS)
    ]
    assert sum(report.rows for report in reports) == len(chunks)  # every row in one shard
    assert all(report.rows > 0 and report.plan_build == "plan" for report in reports)
    for report in reports:  # a document's chunks stay together
        assert report.documents == len(
            {c.doc_id for c in chunks if shard_of(c.doc_id, SHARDS) == report.shard.index}
        )

    finisher = CountingEmbedder()
    release_run = Build(repository, "release-run")  # another run, the plan's files linked in
    release_run.folder.mkdir(parents=True)
    for name in ("documents.parquet", "chunks.parquet", "plan.json"):
        os.link(build.folder / name, release_run.folder / name)
    vectors = released(release_run, finisher)
    assert finisher.embedded == 0  # the shards embedded everything
    np.testing.assert_array_equal(vectors, whole)


def test_a_missing_shard_is_embedded_by_the_build_and_only_it(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    build = planned(repository, "plan", corpus())
    identity = embedder_identity(HashEmbedder())
    reports = [embed_shard(build, Shard(i, SHARDS), HashEmbedder(), identity) for i in (0, 1, 3)]
    finisher = CountingEmbedder()
    report = embed_build(build, finisher, identity)
    missing = len(build.chunks()) - sum(r.rows for r in reports)
    assert missing > 0 and finisher.embedded == missing == report.computed
    assert report.from_shards == sum(r.rows for r in reports)


def test_shards_skip_rows_whose_vectors_the_base_release_already_has(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    documents = corpus()
    first = planned(repository, "first", documents)
    embed_build(first, HashEmbedder(), embedder_identity(HashEmbedder()))
    count_build_terms(first)
    publish_release(repository, assemble_release(first), EmbeddedBackend(), Retention())
    changed = dict(documents, **{"doc-3": documents["doc-3"] + " An added sentence here."})
    build = planned(repository, "second", changed)
    identity = embedder_identity(HashEmbedder())
    counting = CountingEmbedder()
    rows = sum(embed_shard(build, Shard(i, SHARDS), counting, identity).rows for i in range(4))
    assert 0 < rows == counting.embedded == len(build.plan().new_rows) - len(build.plan().copied)
    assert rows < 4  # only the changed document's new chunks


def test_a_shard_of_another_model_is_refused_naming_both(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    build = planned(repository, "plan", corpus())
    with pytest.raises(BuildError, match=r"planned for embedder test-hash-embedder.*another-model"):
        embed_shard(build, Shard(0, 2), OtherModel(), embedder_identity(OtherModel()))
    # A file written by another model (a rerun after the model changed) is refused on reading.
    embed_shard(build, Shard(0, 2), HashEmbedder(), embedder_identity(HashEmbedder()))
    other = repository.builds_dir / "plan" / SHARDS_DIR / "000-of-002.npz"
    with np.load(other) as data:
        rows, vectors = data["rows"], data["vectors"]
    with other.open("wb") as file:
        np.savez(file, rows=rows, vectors=vectors, identity=np.asarray("another-model@dim16"))
    with pytest.raises(BuildError, match=r"plan \(shard 000-of-002\).*another-model@dim16"):
        embed_build(build, HashEmbedder(), embedder_identity(HashEmbedder()))


def test_a_damaged_shard_file_is_reported_by_path(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    build = planned(repository, "plan", corpus())
    embed_shard(build, Shard(1, 2), HashEmbedder(), embedder_identity(HashEmbedder()))
    damaged = repository.builds_dir / "plan" / SHARDS_DIR / "001-of-002.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(CorruptIndexError, match=r"001-of-002\.npz: unreadable shard"):
        embed_build(build, HashEmbedder(), embedder_identity(HashEmbedder()))


def _embed_one_shard(root: str, key: str) -> None:
    build = Build(IndexRepository(Path(root)), "plan")
    embed_shard(build, Shard.parse(key), HashEmbedder(), embedder_identity(HashEmbedder()))


def test_shards_written_by_parallel_processes_are_all_complete(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    build = planned(repository, "plan", corpus(200))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_embed_one_shard, args=(str(tmp_path), key)) for key in shard_keys(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    counting = CountingEmbedder()
    report = embed_build(build, counting, embedder_identity(counting))
    assert counting.embedded == 0 and report.from_shards == len(build.chunks())
    leftovers = [p.name for p in (build.folder / SHARDS_DIR).iterdir() if p.suffix != ".npz"]
    assert leftovers == []  # no half-written file left behind
