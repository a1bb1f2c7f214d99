"""Resources shared by every asset group, with defaults from ``aiplatform_dagster.settings``.

The embedded defaults (local folders, packaged MiniLM, embedded vector index) need no
server and no key; production swaps each for its service by configuration alone.
"""

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from aiplatform_dagster import settings
from aiplatform_dagster.rag.artifacts import IngestionStore
from aiplatform_dagster.rag.documents import DEFAULT_MAX_FILE_BYTES
from aiplatform_dagster.rag.embedders import Embedder, OpenAIEmbedder, SentenceTransformerEmbedder
from aiplatform_dagster.rag.vector_store import EmbeddedVectorIndex, VectorStore


class DocumentSourceResource(dg.ConfigurableResource):
    """The folder of documents that ingestion reads and the sensor watches."""

    folder: str = Field(description="Folder of .md, .txt and .html documents (recursive).")
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES, description="Larger files are skipped and reported."
    )

    @property
    def path(self) -> Path:
        return Path(self.folder)


class StorageResource(dg.ConfigurableResource):
    """Root folder of materialised artifacts (a shared volume or blob mount in Kubernetes)."""

    root_dir: str = Field(description="Folder for chunks, embeddings and indexes.")

    def ingestion_store(self) -> IngestionStore:
        return IngestionStore(Path(self.root_dir) / "ingestion")


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model used for chunks and queries (must be the same for both)."""

    provider: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    model_path: str | None = Field(
        default=None,
        description="sentence-transformers model folder; default: packaged all-MiniLM-L6-v2.",
    )
    device: str = Field(default="cpu", description="cpu, cuda or cuda:N.")
    batch_size: int = 64
    openai_model: str = "text-embedding-3-small"
    openai_dimension: int = 1536
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint; None means api.openai.com."
    )
    openai_api_key: str | None = Field(
        default=None, description="Set from the environment (OPENAI_API_KEY), never in code."
    )

    def get_embedder(self) -> Embedder:
        if self.provider == "openai":
            return OpenAIEmbedder(
                model=self.openai_model,
                dimension=self.openai_dimension,
                base_url=self.openai_base_url,
                api_key=self.openai_api_key,
            )
        return SentenceTransformerEmbedder(self.model_path, self.device, self.batch_size)


class VectorStoreResource(dg.ConfigurableResource):
    """The vector backend. ``embedded`` is an exact index in the storage folder."""

    backend: Literal["embedded"] = "embedded"
    storage: StorageResource

    def get_store(self) -> VectorStore:
        return EmbeddedVectorIndex(self.storage.ingestion_store().vector_dir)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for this environment: laptop defaults, overridden by environment variables."""
    storage = StorageResource(root_dir=str(settings.storage_dir()))
    return {
        "documents": DocumentSourceResource(folder=str(settings.documents_dir())),
        "storage": storage,
        "embedder": EmbedderResource(
            provider=os.environ.get("AIPLATFORM_EMBEDDER", "sentence-transformers"),
            model_path=os.environ.get("AIPLATFORM_EMBEDDING_MODEL"),
            device=os.environ.get("AIPLATFORM_EMBEDDING_DEVICE", "cpu"),
            openai_base_url=os.environ.get("OPENAI_BASE_URL"),
            openai_api_key=_secret("OPENAI_API_KEY"),
        ),
        "vector_store": VectorStoreResource(storage=storage),
    }


def _secret(name: str) -> dg.EnvVar | None:
    """An environment-backed secret: the UI shows its name, never its value."""
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
