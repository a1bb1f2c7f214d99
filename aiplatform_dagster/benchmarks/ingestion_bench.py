"""End-to-end ingestion throughput against the embedding model alone, on the same chunks.

The ingestion job (read, chunk, embed, BM25, vector sync, quality checks) runs in-process
through Dagster exactly as a user materialises it; the baseline is one raw
``SentenceTransformer.encode`` call over the chunk texts that run produced. The model is
loaded before either is timed, so the ratio shows the pipeline's overhead, not start-up.
"""

import os
import tempfile
import time
from pathlib import Path

from aiplatform_dagster.evaluation.beir import load_beir
from aiplatform_dagster.rag.artifacts import IngestionStore
from aiplatform_dagster.rag.embedders import SentenceTransformerEmbedder


def bench_ingestion(dataset: Path, n_docs: int = 1000) -> dict:
    """Chunks per second of the ingestion job and of raw encode over ``n_docs`` BEIR docs."""
    from aiplatform_dagster.definitions import load_definitions

    corpus = list(load_beir(dataset).corpus.values())[:n_docs]
    with tempfile.TemporaryDirectory() as scratch:
        documents = Path(scratch) / "documents"
        documents.mkdir()
        for doc in corpus:
            (documents / f"{doc.doc_id}.txt").write_text(f"{doc.title}\n\n{doc.text}")
        os.environ["AIPLATFORM_DOCUMENTS_DIR"] = str(documents)
        os.environ["AIPLATFORM_STORAGE_DIR"] = str(Path(scratch) / "storage")
        embedder = SentenceTransformerEmbedder()
        embedder.encode(["warm up the model"])

        job = load_definitions().resolve_job_def("ingestion_job")
        started = time.perf_counter()
        job.execute_in_process(raise_on_error=True)
        pipeline_s = time.perf_counter() - started

        chunks = IngestionStore(Path(scratch) / "storage" / "ingestion").read_chunks()
        texts = [chunk.indexed_text for chunk in chunks]
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=64, normalize_embeddings=True)
        encode_s = time.perf_counter() - started
    return {
        "documents": len(corpus),
        "chunks": len(chunks),
        "pipeline_chunks_per_s": len(chunks) / pipeline_s,
        "encode_chunks_per_s": len(chunks) / encode_s,
        "ratio": encode_s / pipeline_s,
    }
