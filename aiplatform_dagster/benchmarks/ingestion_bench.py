"""End-to-end ingestion throughput against the embedding model alone, on the same chunks.

The ingestion job (read, chunk, embed, BM25 term counts, release, checks, publish) runs in-process
through Dagster exactly as a user materialises it; the baseline is one raw
``SentenceTransformer.encode`` call over the chunk texts that run produced. The model is
loaded before either is timed, so the ratio shows the pipeline's overhead, not start-up.
Each side runs ``repeats`` times, alternating, and its best time counts: on a shared 2-core
machine single runs of either side vary by about 5%, as much as the overhead being measured.
"""

import os
import tempfile
import time
from pathlib import Path
from unittest.mock import patch

from aiplatform_dagster.evaluation.beir import load_beir
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.rag.index.releases import IndexRepository

FULL_REFRESH = {"ops": {"document_chunks": {"config": {"reuse_previous": False}}}}
"""Every run embeds every chunk, as the first run would."""


def bench_ingestion(dataset: Path, n_docs: int = 1000, repeats: int = 2) -> dict:
    """Chunks per second of the ingestion job and of raw encode over ``n_docs`` BEIR docs."""
    from aiplatform_dagster.definitions import load_definitions

    corpus = list(load_beir(dataset).corpus.values())[:n_docs]
    with tempfile.TemporaryDirectory() as scratch:
        documents = Path(scratch) / "documents"
        documents.mkdir()
        for doc in corpus:
            (documents / f"{doc.doc_id}.txt").write_text(f"{doc.title}\n\n{doc.text}")
        storage = Path(scratch) / "storage"
        embedder = SentenceTransformerEmbedder()
        embedder.encode(["warm up the model"])
        repository = IndexRepository(storage / "ingestion")
        pipeline_s = encode_s = float("inf")
        folders = {
            "AIPLATFORM_DOCUMENTS_DIR": str(documents),
            "AIPLATFORM_STORAGE_DIR": str(storage),
        }
        with patch.dict(os.environ, folders):  # the job reads its folders from the environment
            job = load_definitions().resolve_job_def("ingestion_job")
            for _ in range(repeats):
                started = time.perf_counter()
                job.execute_in_process(run_config=FULL_REFRESH, raise_on_error=True)
                pipeline_s = min(pipeline_s, time.perf_counter() - started)

                texts = [chunk.indexed_text for chunk in repository.open_pointer().chunks]
                started = time.perf_counter()
                embedder.model.encode(texts, batch_size=64, normalize_embeddings=True)
                encode_s = min(encode_s, time.perf_counter() - started)
    return {
        "documents": len(corpus),
        "chunks": len(texts),
        "pipeline_chunks_per_s": len(texts) / pipeline_s,
        "encode_chunks_per_s": len(texts) / encode_s,
        "ratio": encode_s / pipeline_s,
    }
