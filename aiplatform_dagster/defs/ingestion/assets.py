"""Ingestion assets: each step of one index-release build, then the pointer move that publishes it.

Every step writes into its run's build folder (``defs/ingestion/builds.py``), where no query
looks; ``index_release`` turns the build into an immutable release, its blocking check opens
and probes it, and only then does ``current_release`` move the ``current`` pointer.
"""

import shutil
import time
from collections import Counter

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import CPU_LARGE, CPU_SMALL, GPU_T4, on_profile
from aiplatform_dagster.defs.ingestion.builds import BUILD_ID, run_build
from aiplatform_dagster.defs.metadata import histogram, markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.evaluation.runner import judged_questions
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import (
    Build,
    assemble_release,
    count_build_terms,
    plan_build,
    publish_release,
)
from aiplatform_dagster.rag.index.embedding import embed_build
from aiplatform_dagster.rag.index.releases import CURRENT, IndexRepository
from aiplatform_dagster.rag.index.segments import CorruptIndexError
from aiplatform_dagster.rag.ingest.chunking import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    ChunkingConfig,
)
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import chunk_for
from aiplatform_dagster.rag.ingest.removal_guard import check_removal

GROUP = "ingestion"
OWNERS = ["team:ml-platform"]


class SourceDocumentsConfig(dg.Config):
    allow_mass_removal: bool = Field(
        default=False,
        description="Let this run remove more than the configured share of the indexed "
        "documents (AIPLATFORM_MAX_REMOVED_SHARE); off, an empty or unmounted folder is refused.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    code_version="1",
    **on_profile(CPU_SMALL),
)
def source_documents(
    context: dg.AssetExecutionContext, config: SourceDocumentsConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """Every readable document under the configured folder, as clean text with provenance.

    Unreadable, binary, empty, oversized files and links leaving the folder are skipped and
    listed. A run that would drop most indexed documents at once is refused.
    """
    settings = platform.settings()
    folder = settings.paths.documents_dir
    docs, skipped = load_documents(
        folder,
        settings.ingest.max_file_bytes,
        follow_external_symlinks=settings.ingest.follow_external_symlinks,
    )
    for problem in skipped:
        context.log.warning(f"Skipped {problem.path}: {problem.reason}")
    repository = platform.repository()
    check_removal(
        _indexed_document_ids(context, repository),
        [doc.doc_id for doc in docs],
        folder=folder,
        max_share=settings.ingest.max_removed_share,
        allow=config.allow_mass_removal,
    )
    Build(repository, context.run_id).write_documents(docs)
    context.log.info(f"Read {len(docs)} documents from {folder}, skipped {len(skipped)}")
    formats = Counter(doc.doc_id.rsplit(".", 1)[-1] for doc in docs)
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            "dagster/row_count": len(docs),
            "skipped_files": len(skipped),
            "skipped": markdown_table([{"file": s.path, "reason": s.reason} for s in skipped], 50),
            "folder": dg.MetadataValue.path(str(folder)),
            "formats": dg.MetadataValue.json(dict(formats)),
            "total_characters": sum(len(doc.text) for doc in docs),
            "preview": markdown_table(
                [{"doc_id": d.doc_id, "title": d.title, "characters": len(d.text)} for d in docs]
            ),
        }
    )


class DocumentChunksConfig(dg.Config):
    """Chunk size and overlap, counted in the embedder's tokens, and what the build reuses."""

    chunk_tokens: int = Field(
        default=DEFAULT_CHUNK_TOKENS, description="Budget per chunk, title included."
    )
    overlap_tokens: int = Field(
        default=DEFAULT_OVERLAP_TOKENS, description="Tokens repeated from the previous chunk."
    )
    reuse_previous: bool = Field(
        default=True,
        description="Reuse unchanged rows and vectors of the current release; the nightly full "
        "refresh sets False to rebuild everything.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    deps=[source_documents],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def document_chunks(
    context: dg.AssetExecutionContext, config: DocumentChunksConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """Documents split at paragraph, sentence, then word boundaries into token-sized chunks,
    and the build's plan: which rows the current release already holds, which to embed."""
    build = run_build(context, platform.repository(), ["source_documents"])
    embedder = platform.embedder()
    chunking = ChunkingConfig(config.chunk_tokens, config.overlap_tokens)
    chunked = chunk_for(build.documents(), embedder, chunking)
    for problem in chunked.problems:
        context.log.warning(f"{problem.doc_id}: {problem.reason}")
    chunks = chunked.chunks
    plan = plan_build(
        build,
        chunks,
        embedder_identity(embedder),
        embedder.model_id,
        chunking,
        config.reuse_previous,
    )
    context.log.info(
        f"{len(chunks)} chunks; {plan.kept_rows} kept from {plan.base or 'no release'}, "
        f"{len(plan.new_rows)} new ({plan.base_note})"
    )
    token_counts = sorted(chunk.token_count for chunk in chunks)
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            "dagster/row_count": len(chunks),
            "documents": len({chunk.doc_id for chunk in chunks}),
            "kept_rows": plan.kept_rows,
            "new_rows": len(plan.new_rows),
            "base_release": plan.base or "none",
            "plan": plan.base_note,
            "chunk_tokens": chunking.chunk_tokens,
            "overlap_tokens": chunking.overlap_tokens,
            "median_tokens": token_counts[len(token_counts) // 2] if chunks else 0,
            "max_tokens": token_counts[-1] if chunks else 0,
            "chunk_length_histogram": histogram(token_counts),
            "problems": markdown_table(
                [{"document": p.doc_id, "problem": p.reason} for p in chunked.problems], 50
            ),
            "preview": markdown_table(
                [
                    {
                        "chunk_id": c.chunk_id[:12],
                        "doc_id": c.doc_id,
                        "position": c.position,
                        "tokens": c.token_count,
                        "text": c.text,
                    }
                    for c in chunks
                ]
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "numpy"},
    deps=[document_chunks],
    code_version="1",
    **on_profile(GPU_T4),
)
def chunk_embeddings(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult:
    """Unit-length vectors for the build's new rows; unchanged text copies its vector, and
    rows that ``embedding_shards`` embedded for this plan are taken from its shards."""
    build = run_build(context, platform.repository(), ["source_documents", "document_chunks"])
    embedder = platform.embedder()
    identity = embedder_identity(embedder)

    def report(done: int, total: int) -> None:
        context.log.info(f"Embedded {done}/{total} new chunks")

    questions = judged_questions(platform.settings())
    result = embed_build(build, embedder, identity, report, questions)
    context.log.info(
        f"{result.computed} embedded, {result.copied} copied, {result.from_shards} from "
        f"shards, {result.kept} kept "
        f"in {result.seconds:.1f}s"
    )
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            "dagster/row_count": result.computed + result.copied,
            "computed": result.computed,
            "copied": result.copied,
            "from_shards": result.from_shards,
            "kept": result.kept,
            "model": embedder.model_id,
            "embedder_identity": identity,
            "seconds": round(result.seconds, 2),
            "chunks_per_second": round(result.computed / result.seconds, 1)
            if result.computed
            else 0.0,
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "scipy"},
    deps=[document_chunks],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def bm25_index(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult:
    """Keyword term counts of the build's new rows (Okapi BM25 with stemming; IDs, dates and
    codes stay exact); a release combines them with the rows it keeps."""
    build = run_build(context, platform.repository(), ["source_documents", "document_chunks"])
    started = time.perf_counter()
    vocabulary = count_build_terms(build)
    seconds = time.perf_counter() - started
    rows = len(build.plan().new_rows)
    context.log.info(f"Counted terms of {rows} new chunks ({vocabulary} terms) in {seconds:.1f}s")
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            "dagster/row_count": rows,
            "vocabulary_size": vocabulary,
            "build_seconds": round(seconds, 2),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "faiss"},
    deps=[chunk_embeddings, bm25_index],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def index_release(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult:
    """An immutable index release: chunks, BM25 and vectors as one consistent snapshot.

    It shares unchanged segments with its predecessor and is loaded into the vector backend,
    but no query sees it until its checks pass and ``current_release`` points at it.
    """
    repository = platform.repository()
    build = run_build(
        context,
        repository,
        ["source_documents", "document_chunks", "chunk_embeddings", "bm25_index"],
    )
    release = assemble_release(
        build,
        provenance={"dagster_run_id": context.run_id, "build_id": build.build_id},
        log=context.log.info,
    )
    backend = platform.vector_backend()
    backend.prepare(release)
    manifest = release.manifest
    context.log.info(f"Wrote index release {release.release_id}: {manifest['counts']}")
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            "release_id": release.release_id,
            "predecessor": manifest["predecessor"] or "none",
            "dagster/row_count": manifest["counts"]["chunks"],
            "documents": manifest["counts"]["documents"],
            "new_rows": manifest["counts"]["new"],
            "kept_rows": manifest["counts"]["kept"],
            "embedder": manifest["embedder"]["identity"],
            "corpus_hash": manifest["corpus_hash"],
            "vector_backend": backend.name,
            "segments": markdown_table(manifest["segments"]),
            **(
                {"vector_recall_at_10": recall}
                if (recall := release.vector_recall()) is not None
                else {}
            ),
            "manifest": dg.MetadataValue.json(manifest),
            "path": dg.MetadataValue.path(str(release.folder)),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python"},
    deps=[index_release],
    code_version="1",
    **on_profile(CPU_SMALL),
)
def current_release(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult:
    """The release every query reads: ``current`` moves to the checked ``index_release``.

    The move is atomic and happens only if ``current`` still names the release the build
    started from; older releases beyond the retention rule are deleted, never a pointed one.
    """
    repository = platform.repository()
    build = run_build(context, repository, ["index_release"])
    release = repository.open(build.release_id())
    started = time.perf_counter()
    previous, deleted = publish_release(
        repository, release, platform.vector_backend(), platform.retention()
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(build.folder, ignore_errors=True)  # the release holds all it staged
    context.log.info(f"current: {previous} -> {release.release_id}; deleted {deleted}")
    return dg.MaterializeResult(
        metadata={
            "release_id": release.release_id,
            "previous_release": previous or "none",
            "embedder": release.embedder_identity,
            "dagster/row_count": release.manifest["counts"]["chunks"],
            "publish_seconds": round(seconds, 3),
            "deleted_releases": dg.MetadataValue.json(deleted),
        }
    )


def _indexed_document_ids(
    context: dg.AssetExecutionContext, repository: IndexRepository
) -> list[str]:
    """Documents of the current release, for the removal guard (none before the first)."""
    try:
        if repository.pointer(CURRENT) is None:
            return []
        return [doc.doc_id for doc in repository.open_pointer(CURRENT).documents]
    except CorruptIndexError as error:
        context.log.warning(f"Removal guard cannot read the current release: {error}")
        return []
