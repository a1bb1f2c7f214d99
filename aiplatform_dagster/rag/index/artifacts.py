"""Where the ingestion pipeline keeps its artifacts, and how they are read back.

Each artifact is replaced atomically, so the query path and a concurrent run always
see a complete previous version, never a partial write.
"""

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aiplatform_dagster.rag.index.atomic import atomic_directory
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.ingest.documents import Document


@dataclass(frozen=True)
class StoredEmbeddings:
    """Vectors of a materialisation, row i belonging to chunk_ids[i]."""

    chunk_ids: list[str]
    vectors: np.ndarray
    model_id: str


class IngestionStore:
    """The artifact folder of one corpus (the platform's, or a benchmark's)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def documents_path(self) -> Path:
        return self.root / "documents.parquet"

    @property
    def chunks_path(self) -> Path:
        return self.root / "chunks.parquet"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def bm25_dir(self) -> Path:
        return self.root / "bm25_index"

    @property
    def vector_dir(self) -> Path:
        return self.root / "vector_index"

    def write_documents(self, documents: list[Document]) -> None:
        _write_records(self.documents_path, documents, Document)

    def read_documents(self) -> list[Document]:
        return [Document(**row) for row in _read_rows(self.documents_path, "source_documents")]

    def write_chunks(self, chunks: list[Chunk]) -> None:
        _write_records(self.chunks_path, chunks, Chunk)

    def read_chunks(self) -> list[Chunk]:
        return [Chunk(**row) for row in _read_rows(self.chunks_path, "document_chunks")]

    def write_embeddings(self, embeddings: StoredEmbeddings) -> None:
        with atomic_directory(self.embeddings_dir) as scratch:
            np.save(scratch / "vectors.npy", embeddings.vectors.astype(np.float32))
            (scratch / "manifest.json").write_text(
                json.dumps(
                    {
                        "model_id": embeddings.model_id,
                        "chunk_ids": embeddings.chunk_ids,
                        "dimension": int(embeddings.vectors.shape[1]),
                    }
                )
            )

    def read_embeddings(self) -> StoredEmbeddings | None:
        """The last materialised embeddings, or None if there are none yet."""
        manifest_path = self.embeddings_dir / "manifest.json"
        if not manifest_path.exists():
            return None
        manifest = json.loads(manifest_path.read_text())
        vectors = np.load(self.embeddings_dir / "vectors.npy")
        return StoredEmbeddings(manifest["chunk_ids"], vectors, manifest["model_id"])


def _write_records(path: Path, records: list, record_type: type) -> None:
    names = [f.name for f in fields(record_type)]
    rows = [asdict(record) for record in records]
    table = pa.Table.from_pylist(rows) if rows else pa.table({name: [] for name in names})
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, scratch)
    os.replace(scratch, path)


def _read_rows(path: Path, producing_asset: str) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialise the {producing_asset} asset first "
            "(make ingest, or materialise the ingestion group in the Dagster UI)"
        )
    return pq.read_table(path).to_pylist()
