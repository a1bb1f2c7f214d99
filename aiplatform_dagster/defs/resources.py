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
from aiplatform_dagster.models.embedders import (
    DEFAULT_OPENAI_EMBEDDING_DIMENSION,
    DEFAULT_OPENAI_EMBEDDING_MODEL,
    Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from aiplatform_dagster.models.llm import DEFAULT_MODEL, LLMSettings, api_key_variable
from aiplatform_dagster.rag.index.artifacts import IngestionStore
from aiplatform_dagster.rag.index.vector_store import EmbeddedVectorIndex, VectorStore
from aiplatform_dagster.rag.index.weaviate_store import DEFAULT_COLLECTION, WeaviateVectorStore
from aiplatform_dagster.rag.ingest.documents import DEFAULT_MAX_FILE_BYTES
from aiplatform_dagster.rag.query.accounting import PRICE_TABLE_ENV, PriceTable
from aiplatform_dagster.rag.query.cache import DEFAULT_REDIS_PREFIX, DEFAULT_TTL_SECONDS, open_cache
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster.rag.query.rerank import load_reranker
from aiplatform_dagster.rag.query.retriever import FusionMethod, HybridConfig, Retriever
from aiplatform_dagster.rag.query.router import RoutingRules, RuleRouter


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
    openai_model: str = DEFAULT_OPENAI_EMBEDDING_MODEL
    openai_dimension: int = DEFAULT_OPENAI_EMBEDDING_DIMENSION
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
    """The vector backend, chosen by configuration.

    ``embedded`` is an exact index in the storage folder and needs no server; ``weaviate`` is a
    collection on a Weaviate server, for deployments that share one.
    """

    backend: Literal["embedded", "weaviate"] = "embedded"
    storage: StorageResource
    weaviate_url: str | None = Field(
        default=None, description="Weaviate HTTP URL, e.g. http://weaviate:8080 (gRPC on 50051)."
    )
    weaviate_api_key: str | None = Field(
        default=None, description="Set from the environment (WEAVIATE_API_KEY), never in code."
    )
    weaviate_collection: str = Field(
        default=DEFAULT_COLLECTION, description="Collection holding the chunk vectors."
    )

    def get_store(self) -> VectorStore:
        if self.backend == "weaviate":
            if not self.weaviate_url:
                raise ValueError(
                    "vector_store backend 'weaviate' needs weaviate_url: set "
                    "AIPLATFORM_WEAVIATE_URL (e.g. http://weaviate:8080), or "
                    "AIPLATFORM_VECTOR_BACKEND=embedded"
                )
            return WeaviateVectorStore(
                self.weaviate_url, self.weaviate_collection, api_key=self.weaviate_api_key
            )
        return EmbeddedVectorIndex(self.storage.ingestion_store().vector_dir)


class QueryEngineResource(dg.ConfigurableResource):
    """The query path: reranker, LLM, response cache and prices over the ingestion indexes.

    Unset reranker or LLM is a supported mode, reported in every answer: reranking is
    skipped, answers are extractive.
    """

    storage: StorageResource
    embedder: EmbedderResource
    vector_store: VectorStoreResource
    reranker_model: str | None = Field(
        default=None, description="CrossEncoder folder, hub name or MLflow model URI."
    )
    reranker_device: str = "cpu"
    candidates: int = Field(default=10, description="Fused candidates the reranker scores.")
    top_n: int = Field(default=3, description="Chunks kept after reranking, given to the LLM.")
    dense_weight: float = Field(
        default=HybridConfig.dense_weight, description="Semantic share of hybrid fusion."
    )
    fusion: Literal["score", "rrf"] = "score"
    context_tokens: int = Field(default=1800, description="Token budget of the sources.")
    keyword_max_words: int = Field(
        default=RoutingRules.keyword_max_words,
        description="Exact-match queries up to this many words go to keyword search.",
    )
    semantic_min_words: int = Field(
        default=RoutingRules.semantic_min_words,
        description="Plain questions of at least this many words go to semantic search.",
    )
    llm_model: str = Field(default=DEFAULT_MODEL, description="Model, or Azure deployment.")
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint.")
    llm_api_key: str | None = Field(default=None, description="From OPENAI_API_KEY.")
    azure_endpoint: str | None = None
    azure_api_version: str | None = None
    llm_timeout_s: float = 60.0
    redis_url: str | None = Field(
        default=None, description="Response cache in Redis; unset: SQLite in the storage folder."
    )
    redis_prefix: str = Field(
        default=DEFAULT_REDIS_PREFIX, description="Key prefix, so environments can share Redis."
    )
    cache_ttl_seconds: int = DEFAULT_TTL_SECONDS
    price_table: str | None = Field(
        default=None, description="JSON file of USD per 1M tokens by model."
    )

    def llm_settings(self) -> LLMSettings:
        return LLMSettings(
            model=self.llm_model,
            base_url=self.llm_base_url,
            api_key=self.llm_api_key,
            azure_endpoint=self.azure_endpoint,
            api_version=self.azure_api_version,
            timeout_s=self.llm_timeout_s,
        )

    def query_options(self) -> QueryOptions:
        return QueryOptions(
            candidates=self.candidates,
            top_n=self.top_n,
            hybrid=HybridConfig(self.dense_weight, fusion=FusionMethod(self.fusion)),
            context_tokens=self.context_tokens,
        )

    def get_engine(self, benchmark_store: IngestionStore | None = None) -> QueryEngine:
        """The engine over the platform's indexes, or over a benchmark's embedded indexes."""
        store = benchmark_store or self.storage.ingestion_store()
        vectors = (
            EmbeddedVectorIndex(store.vector_dir)
            if benchmark_store
            else self.vector_store.get_store()
        )
        embedder = self.embedder.get_embedder()
        settings = self.llm_settings()
        return QueryEngine(
            Retriever.from_store(store, embedder, vectors),
            embedder.count_tokens,
            router=RuleRouter(
                RoutingRules(
                    keyword_max_words=self.keyword_max_words,
                    semantic_min_words=self.semantic_min_words,
                )
            ),
            defaults=self.query_options(),
            reranker=load_reranker(self.reranker_model, self.reranker_device),
            llm=settings.build_client() if settings.is_configured else None,
            llm_model=settings.model if settings.is_configured else None,
            cache=open_cache(
                self.redis_url,
                Path(self.storage.root_dir) / "cache" / "responses.sqlite",
                self.cache_ttl_seconds,
                self.redis_prefix,
            ),
            prices=PriceTable.from_json(self.price_table) if self.price_table else PriceTable(),
        )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for this environment: laptop defaults, overridden by environment variables."""
    env = os.environ.get
    storage = StorageResource(root_dir=str(settings.storage_dir()))
    embedder = EmbedderResource(
        provider=env("AIPLATFORM_EMBEDDER", "sentence-transformers"),
        model_path=env("AIPLATFORM_EMBEDDING_MODEL"),
        device=env("AIPLATFORM_EMBEDDING_DEVICE", "cpu"),
        openai_model=env("AIPLATFORM_OPENAI_EMBEDDING_MODEL", DEFAULT_OPENAI_EMBEDDING_MODEL),
        openai_dimension=int(
            env("AIPLATFORM_OPENAI_EMBEDDING_DIMENSION", DEFAULT_OPENAI_EMBEDDING_DIMENSION)
        ),
        openai_base_url=env("OPENAI_BASE_URL"),
        openai_api_key=_secret("OPENAI_API_KEY"),
    )
    vector_store = VectorStoreResource(
        storage=storage,
        backend=env("AIPLATFORM_VECTOR_BACKEND", "embedded"),
        weaviate_url=env("AIPLATFORM_WEAVIATE_URL"),
        weaviate_api_key=_secret("WEAVIATE_API_KEY"),
        weaviate_collection=env("AIPLATFORM_WEAVIATE_COLLECTION", DEFAULT_COLLECTION),
    )
    llm = LLMSettings.from_env()
    return {
        "documents": DocumentSourceResource(folder=str(settings.documents_dir())),
        "storage": storage,
        "embedder": embedder,
        "vector_store": vector_store,
        "rag": QueryEngineResource(
            storage=storage,
            embedder=embedder,
            vector_store=vector_store,
            reranker_model=env("AIPLATFORM_RERANKER_MODEL"),
            reranker_device=env("AIPLATFORM_RERANKER_DEVICE", "cpu"),
            llm_model=llm.model,
            llm_base_url=llm.base_url,
            llm_api_key=_secret(api_key_variable(azure=bool(llm.azure_endpoint))),
            azure_endpoint=llm.azure_endpoint,
            azure_api_version=llm.api_version,
            redis_url=env("AIPLATFORM_REDIS_URL"),
            redis_prefix=env("AIPLATFORM_REDIS_PREFIX", DEFAULT_REDIS_PREFIX),
            price_table=env(PRICE_TABLE_ENV),
        ),
    }


def _secret(name: str) -> dg.EnvVar | None:
    """An environment-backed secret: the UI shows its name, never its value."""
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
