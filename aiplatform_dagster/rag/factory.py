"""Everything the configuration builds: the embedder, the repository, the vector backend and the
query engine. The Dagster resources, the CLI and the serving API all call these, so the three
never drift apart, and none of this imports Dagster.
"""

import threading
from dataclasses import dataclass

from aiplatform_dagster.config import Settings
from aiplatform_dagster.models.embedders import (
    Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.models.llm import LLMSettings
from aiplatform_dagster.monitoring.recorder import QueryRecorder, start_recorder
from aiplatform_dagster.rag.index.releases import CURRENT, IndexRepository, Release, Retention
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend, VectorBackend
from aiplatform_dagster.rag.query.accounting import PriceTable
from aiplatform_dagster.rag.query.cache import open_cache
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster.rag.query.rerank import load_reranker
from aiplatform_dagster.rag.query.retriever import FusionMethod, HybridConfig, Retriever
from aiplatform_dagster.rag.query.router import Router, RoutingRules, RuleRouter

REGISTRY_URI_PREFIX = "models:/"


def build_embedder(settings: Settings, built_identity: str | None = None) -> Embedder:
    """The configured embedder. Configured as a registry alias (models:/embedder@champion), the
    version whose vectors carry ``built_identity`` (the release being read or extended), or the
    one the alias names when no version built it."""
    config = settings.embedding
    if config.provider == "openai":
        return OpenAIEmbedder(
            **({"model": config.model} if config.model else {}),
            dimension=config.dimension,
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value() if config.api_key else None,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
    if config.model and config.model.startswith(REGISTRY_URI_PREFIX):
        from aiplatform_dagster.mlops.serving import registered_embedder
        from aiplatform_dagster.mlops.tracking import mlflow_target

        return registered_embedder(
            mlflow_target(settings),
            config.model,
            settings.paths.storage_dir / "models",
            config.device,
            config.batch_size,
            built_identity,
        )
    return SentenceTransformerEmbedder(config.model, config.device, config.batch_size)


def current_embedder(settings: Settings) -> Embedder:
    """The embedder that reads and extends the release ``current`` names."""
    repository = open_repository(settings)
    current = repository.pointer(CURRENT)
    return build_embedder(settings, repository.open(current).embedder_identity if current else None)


def open_repository(settings: Settings) -> IndexRepository:
    """The platform's releases, under the storage folder."""
    return IndexRepository(
        settings.paths.storage_dir / "ingestion", lock_timeout_s=settings.releases.lock_timeout_s
    )


def retention(settings: Settings) -> Retention:
    return Retention(keep=settings.releases.keep, keep_days=settings.releases.keep_days)


def build_vector_backend(settings: Settings) -> VectorBackend:
    if settings.vectors.backend == "weaviate":
        from aiplatform_dagster.rag.index.weaviate_store import WeaviateBackend

        weaviate = settings.weaviate
        if not weaviate.url:
            raise ValueError(
                "AIPLATFORM_VECTOR_BACKEND=weaviate needs AIPLATFORM_WEAVIATE_URL (e.g. "
                "http://weaviate:8080), or set AIPLATFORM_VECTOR_BACKEND=embedded"
            )
        return WeaviateBackend(
            weaviate.url,
            weaviate.api_key.get_secret_value() if weaviate.api_key else None,
            prefix=weaviate.prefix_name,
            grpc_port=weaviate.grpc_port,
            timeout_s=weaviate.timeout_s,
        )
    return EmbeddedBackend()


def llm_settings(settings: Settings, judge: bool = False) -> LLMSettings:
    """How to reach the chat model (or, with ``judge``, the model that grades answers)."""
    llm = settings.llm
    key = llm.azure_api_key if llm.azure_endpoint else llm.api_key
    return LLMSettings(
        model=(llm.judge_model or llm.model) if judge else llm.model,
        base_url=llm.base_url,
        api_key=key.get_secret_value() if key else None,
        azure_endpoint=llm.azure_endpoint,
        api_version=llm.api_version,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        timeout_s=llm.timeout_s,
        max_retries=llm.max_retries,
    )


def query_options(settings: Settings) -> QueryOptions:
    query = settings.query
    return QueryOptions(
        candidates=query.candidates,
        top_n=query.top_n,
        hybrid=HybridConfig(query.dense_weight, fusion=FusionMethod(query.fusion)),
        context_tokens=query.context_tokens,
    )


def price_table(settings: Settings) -> PriceTable:
    path = settings.query.price_table
    return PriceTable.from_json(path) if path else PriceTable()


def rule_router(settings: Settings) -> RuleRouter:
    return RuleRouter(
        RoutingRules(
            keyword_max_words=settings.query.keyword_max_words,
            semantic_min_words=settings.query.semantic_min_words,
        )
    )


def build_router(settings: Settings) -> Router:
    """The trained router the registry alias names now, or the rules when none is configured.

    A configured router that cannot be loaded is an error, never a silent fall-back to the rules.
    """
    if settings.query.router_model is None:
        return rule_router(settings)
    from aiplatform_dagster.mlops.serving import load_registered_router
    from aiplatform_dagster.mlops.tracking import mlflow_target

    return load_registered_router(mlflow_target(settings), settings.query.router_model)


def router_version(settings: Settings) -> str | None:
    """The version the configured router alias names now; None for the rules."""
    if settings.query.router_model is None:
        return None
    from aiplatform_dagster.mlops.serving import alias_version
    from aiplatform_dagster.mlops.tracking import mlflow_target

    return alias_version(mlflow_target(settings), settings.query.router_model)


def build_query_engine(
    settings: Settings,
    release: Release | None = None,
    embedder: Embedder | None = None,
    backend: VectorBackend | None = None,
    recorder: QueryRecorder | None = None,
    router: Router | None = None,
) -> QueryEngine:
    """The query path over ``release`` (default: the one ``current`` names), built from settings.

    Refuses a release whose vectors another embedder built: its scores would be meaningless.
    """
    release = release or open_repository(settings).open_pointer(CURRENT)
    embedder = embedder or build_embedder(settings, release.embedder_identity)
    release.check_embedder(embedder_identity(embedder), embedder.model_id)
    backend = backend or build_vector_backend(settings)
    llm = llm_settings(settings)
    cache = settings.cache
    return QueryEngine(
        Retriever.from_release(release, embedder, backend.open(release)),
        embedder.count_tokens,
        router=router or build_router(settings),
        defaults=query_options(settings),
        reranker=load_reranker(settings.reranker.model, settings.reranker.device),
        llm=llm.build_client() if llm.is_configured else None,
        llm_model=llm.model if llm.is_configured else None,
        cache=open_cache(
            cache.redis_url,
            settings.paths.storage_dir / "cache" / "responses.sqlite",
            cache.ttl_s,
            cache.redis_prefix,
        ),
        prices=price_table(settings),
        on_answer=recorder.record if recorder is not None else None,
    )


@dataclass(frozen=True)
class Reload:
    """What one ``refresh`` did: moved to a new release or router version, stayed, or stayed
    after an error."""

    release_id: str
    moved: bool
    error: str | None = None
    router_version: str | None = None


class LiveQueryEngine:
    """The engine over whatever ``current`` names, with the router version its alias names,
    swapped without a restart.

    A query in flight keeps the engine it started with; ``refresh`` builds the new engine
    completely before swapping, and a release or router that fails to load leaves the previous
    engine serving (the error is returned, never raised into a request).
    """

    def __init__(self, settings: Settings, pointer: str = CURRENT) -> None:
        self._settings = settings
        self._pointer = pointer
        self._repository = open_repository(settings)
        self._release = self._repository.open_pointer(pointer).load()
        self._embedder = build_embedder(settings, self._release.embedder_identity)
        self._backend = build_vector_backend(settings)
        self._recorder = start_recorder(settings, lambda texts: self._embedder.encode(texts))
        self._lock = threading.Lock()
        self._router = build_router(settings)
        self._engine = self._build(self._release, self._router, self._embedder)

    @property
    def engine(self) -> QueryEngine:
        return self._engine

    @property
    def release_id(self) -> str:
        return self._engine.retriever.release_id or ""

    @property
    def router_version(self) -> str | None:
        return self._router.version

    def refresh(self) -> Reload:
        """Move to the release ``current`` names and the router version its alias names, if
        either changed since the last build."""
        with self._lock:
            current, version = self.release_id, self.router_version
            try:
                target = self._repository.pointer(self._pointer)
                release_moved = target is not None and target != current
                router_moved = router_version(self._settings) != version
                if not (release_moved or router_moved):
                    return Reload(current, moved=False, router_version=version)
                release = self._repository.open(target).load() if release_moved else self._release
                router = build_router(self._settings) if router_moved else self._router
                embedder = self._embedder
                if release.embedder_identity != self._release.embedder_identity:
                    embedder = build_embedder(self._settings, release.embedder_identity)
                self._engine = self._build(release, router, embedder)
                self._release, self._router, self._embedder = release, router, embedder
                return Reload(self.release_id, moved=True, router_version=router.version)
            except Exception as error:  # any failure keeps the last good engine serving
                message = f"{type(error).__name__}: {error}"
                return Reload(current, moved=False, error=message, router_version=version)

    def _build(self, release: Release, router: Router, embedder: Embedder) -> QueryEngine:
        return build_query_engine(
            self._settings, release, embedder, self._backend, self._recorder, router
        )
