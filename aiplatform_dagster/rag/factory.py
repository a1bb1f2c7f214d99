"""Everything the configuration builds: the embedder, the repository, the vector backend and the
query engine. The Dagster resources, the CLI and the serving API all call these, so the three
never drift apart, and none of this imports Dagster.
"""

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from aiplatform_dagster.config import Settings
from aiplatform_dagster.models.batching import BatchingEmbedder
from aiplatform_dagster.models.embedders import (
    Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.models.llm import LLMSettings
from aiplatform_dagster.models.onnx_inference import (
    TORCH,
    Inference,
    OnnxQueryEmbedder,
    OnnxReranker,
)
from aiplatform_dagster.monitoring.recorder import QueryRecorder, start_recorder
from aiplatform_dagster.rag.index.approximate import ApproximatePolicy
from aiplatform_dagster.rag.index.releases import (
    CURRENT,
    IndexRepository,
    Release,
    ReleaseError,
    Retention,
)
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend, VectorBackend
from aiplatform_dagster.rag.query.accounting import PriceTable
from aiplatform_dagster.rag.query.cache import open_cache
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster.rag.query.rerank import Reranker, is_mlflow_uri, load_reranker
from aiplatform_dagster.rag.query.retriever import FusionMethod, HybridConfig, Retriever
from aiplatform_dagster.rag.query.router import Router, RoutingRules, RuleRouter

REGISTRY_URI_PREFIX = "models:/"


def build_embedder(
    settings: Settings,
    built_identity: str | None = None,
    inference: Inference = TORCH,
    yield_cpu: bool = False,
) -> Embedder:
    """The configured embedder. Configured as a registry alias (models:/embedder@champion), the
    version whose vectors carry ``built_identity`` (the release being read or extended), or the
    one the alias names when no version built it. With ``inference`` "onnx" or "onnx-int8"
    (what a serving release that passed the ONNX gate pins), its ONNX twin encodes queries;
    ``yield_cpu`` makes that twin sleep between calls (a server's, see ``onnx_inference``)."""
    embedder = _float_embedder(settings, built_identity)
    if inference != TORCH:
        return OnnxQueryEmbedder.of(
            embedder, onnx_cache(settings), inference, settings.embedding.batch_size, yield_cpu
        )
    return embedder


def _float_embedder(settings: Settings, built_identity: str | None) -> Embedder:
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
            model_cache(settings),
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
        settings.paths.storage_dir / "ingestion",
        lock_timeout_s=settings.releases.lock_timeout_s,
        vector_policy=ApproximatePolicy(
            min_rows=settings.vectors.approximate_min_rows,
            target_recall=settings.vectors.approximate_recall,
        ),
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

    return load_registered_router(
        mlflow_target(settings), settings.query.router_model, model_cache(settings)
    )


def build_reranker(settings: Settings, inference: Inference = TORCH) -> Reranker | None:
    """The configured cross-encoder, if any. A registry alias (models:/reranker@champion) is
    resolved through the platform's MLflow to the version it names now, downloaded once; until
    the first training registers a version, there is none (search without reranking). With
    ``inference`` "onnx" or "onnx-int8", the ONNX copy of its model scores the pairs."""
    model = settings.reranker.model
    tracking_uri = None
    if model and is_mlflow_uri(model):  # mlflow is imported only for a model that lives there
        from aiplatform_dagster.mlops.tracking import mlflow_target

        target = mlflow_target(settings)
        tracking_uri = target.tracking_uri
        if _in_registry(model):
            from aiplatform_dagster.mlops.serving import optional_model_folder

            found = optional_model_folder(target, model, model_cache(settings))
            model = str(found[1]) if found else None
    if inference != TORCH and model and model.strip():
        return OnnxReranker(model.strip(), onnx_cache(settings), inference)
    return load_reranker(model, settings.reranker.device, tracking_uri)


@dataclass(frozen=True)
class ModelVersions:
    """The registry versions the configured models name now (None: not a registry model)."""

    router: str | None
    reranker: str | None


def model_versions(settings: Settings) -> ModelVersions:
    """A cheap look at the aliases a long-running engine follows, before loading anything."""
    from aiplatform_dagster.mlops.serving import resolved_version
    from aiplatform_dagster.mlops.tracking import mlflow_target

    target = mlflow_target(settings)
    router, reranker = settings.query.router_model, settings.reranker.model
    return ModelVersions(
        router=resolved_version(target, router) if router else None,
        reranker=resolved_version(target, reranker) if _in_registry(reranker) else None,
    )


def _in_registry(model: str | None) -> bool:
    return bool(model) and model.startswith(REGISTRY_URI_PREFIX)


def model_cache(settings: Settings) -> Path:
    """Where registry versions are downloaded to, once per version."""
    return settings.paths.storage_dir / "models"


def onnx_cache(settings: Settings) -> Path:
    """Where the ONNX copies of the query models are kept, once per model digest and path."""
    return model_cache(settings) / "onnx"


def build_query_engine(
    settings: Settings,
    release: Release | None = None,
    embedder: Embedder | None = None,
    backend: VectorBackend | None = None,
    recorder: QueryRecorder | None = None,
    router: Router | None = None,
    reranker: Reranker | None = None,
    registry_models: bool = True,
    inference: Inference = TORCH,
    answer_scope: str | None = None,
) -> QueryEngine:
    """The query path over ``release`` (default: the one ``current`` names), built from settings.

    Refuses a release whose vectors another embedder built: its scores would be meaningless.
    ``registry_models=False`` leaves out the trained router and reranker (the rules, no
    reranking): engines that only retrieve, for training and the gates, never depend on what
    the registry serves. ``inference`` is the path of the embedder and reranker built here.
    ``answer_scope`` turns the answer cache on for an engine whose release and models are
    pinned (see ``QueryEngine``).
    """
    release = release or open_repository(settings).open_pointer(CURRENT)
    embedder = embedder or build_embedder(settings, release.embedder_identity, inference)
    release.check_embedder(embedder_identity(embedder), embedder.model_id)
    backend = backend or build_vector_backend(settings)
    llm = llm_settings(settings)
    cache = settings.cache
    return QueryEngine(
        Retriever.from_release(release, embedder, backend.open(release)),
        embedder.count_tokens,
        router=router or (build_router(settings) if registry_models else rule_router(settings)),
        defaults=query_options(settings),
        reranker=reranker or (build_reranker(settings, inference) if registry_models else None),
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
        answer_scope=answer_scope,
    )


@dataclass(frozen=True)
class Target:
    """What a live engine should serve now: an index release, the model versions, and the
    settings its engine is built from. ``name`` changes whenever any of them does."""

    name: str
    release_id: str
    versions: ModelVersions
    settings: Settings
    inference: Inference = TORCH
    """The query encoder's and reranker's inference path (a serving release pins it)."""


Follow = Callable[[], Target]
"""Looks up what to serve now; cheap, since a live engine calls it on every refresh."""


def follow_current(settings: Settings, pointer: str = CURRENT) -> Follow:
    """Serve what ``pointer`` names, with the versions the configured aliases name now."""
    repository = open_repository(settings)

    def target() -> Target:
        release_id = repository.pointer(pointer)
        if release_id is None:
            raise ReleaseError(
                f"no release is {pointer!r} yet: materialise the ingestion group (make ingest)"
            )
        return Target(release_id, release_id, model_versions(settings), settings)

    return target


@dataclass(frozen=True)
class Reload:
    """What one ``refresh`` did: moved to a new target, stayed, or stayed after an error."""

    name: str
    release_id: str
    moved: bool
    versions: ModelVersions
    error: str | None = None


class LiveQueryEngine:
    """The engine over whatever ``follow`` names (default: the ``current`` release with the
    router and reranker versions their aliases name), swapped without a restart.

    A query in flight keeps the engine it started with; ``refresh`` builds the new engine
    completely before swapping, and a release or model that fails to load leaves the previous
    engine serving (the error is returned, never raised into a request).
    """

    def __init__(self, settings: Settings, follow: Follow | None = None) -> None:
        self._follow = follow or follow_current(settings)
        self._repository = open_repository(settings)
        target = self._follow()
        self._release = self._repository.open(target.release_id).load()
        self._embedder = query_embedder(settings, self._release.embedder_identity, target.inference)
        self._backend = build_vector_backend(settings)
        self._recorder = start_recorder(settings, lambda texts: self._embedder.encode(texts))
        self._lock = threading.Lock()
        self._router = build_router(target.settings)
        self._reranker = build_reranker(target.settings, target.inference)
        engine = self._build(target, self._release, self._embedder, self._router, self._reranker)
        self._live = (target, engine)  # one attribute: a reader never sees half a swap

    def snapshot(self) -> tuple[str, QueryEngine]:
        """What is served (the serving release's id, or the index release's) and its engine."""
        target, engine = self._live
        return target.name, engine

    @property
    def engine(self) -> QueryEngine:
        return self._live[1]

    @property
    def name(self) -> str:
        return self._live[0].name

    @property
    def release_id(self) -> str:
        return self._live[0].release_id

    @property
    def versions(self) -> ModelVersions:
        return self._live[0].versions

    def refresh(self) -> Reload:
        """Move to what ``follow`` names now, if anything changed since the last build."""
        with self._lock:
            old = self._live[0]
            try:
                new = self._follow()
                if new.name == old.name and new.versions == old.versions:
                    return Reload(old.name, self.release_id, moved=False, versions=old.versions)
                release = self._release
                if new.release_id != old.release_id:
                    release = self._repository.open(new.release_id).load()
                embedder = self._embedder
                same_inference = new.inference == old.inference
                same_embedder = release.embedder_identity == self._release.embedder_identity
                if not (same_embedder and same_inference):
                    embedder = query_embedder(
                        new.settings, release.embedder_identity, new.inference
                    )
                router, reranker = self._router, self._reranker
                same_query = new.settings.query == old.settings.query
                if not (same_query and new.versions.router == old.versions.router):
                    router = build_router(new.settings)
                same_reranker = new.settings.reranker == old.settings.reranker and same_inference
                if not (same_reranker and new.versions.reranker == old.versions.reranker):
                    reranker = build_reranker(new.settings, new.inference)
                self._live = (new, self._build(new, release, embedder, router, reranker))
                self._release, self._embedder = release, embedder
                self._router, self._reranker = router, reranker
                return Reload(new.name, self.release_id, moved=True, versions=new.versions)
            except Exception as error:  # any failure keeps the last good engine serving
                message = f"{type(error).__name__}: {error}"
                return Reload(old.name, self.release_id, False, old.versions, error=message)

    def _build(
        self,
        target: Target,
        release: Release,
        embedder: Embedder,
        router: Router,
        reranker: Reranker | None,
    ) -> QueryEngine:
        """The engine for ``target``, its models loaded before it serves: the first request
        after a start or a swap costs what any other does."""
        engine = build_query_engine(
            target.settings,
            release,
            embedder,
            self._backend,
            self._recorder,
            router,
            reranker,
            answer_scope=answer_scope(target),
        )
        engine.warm_up()
        return engine


def query_embedder(
    settings: Settings, built_identity: str | None, inference: Inference
) -> Embedder:
    """A long-running engine's embedder: concurrent requests share its model calls, and an
    ONNX encoder leaves the cores to the server's other threads between them."""
    return BatchingEmbedder(build_embedder(settings, built_identity, inference, yield_cpu=True))


def answer_scope(target: Target) -> str:
    """Everything a live engine's answers depend on besides the question and the options: the
    answer cache's scope, so a new release, model version or setting never reads old answers."""
    return json.dumps(
        {
            "name": target.name,
            "release": target.release_id,
            "versions": asdict(target.versions),
            "inference": target.inference,
            "query": target.settings.query.model_dump(mode="json"),
            "reranker": target.settings.reranker.model,
        },
        sort_keys=True,
    )
