"""The platform's one typed configuration: defaults, an optional YAML profile, the environment.

Read by the Dagster resources, the CLI and the serving API alike; none of them needs Dagster to
read it. Precedence: environment variables over the profile file (``AIPLATFORM_PROFILE``) over
the defaults here. Each variable means one thing; secrets come only from the environment (a
profile that holds one is refused) and are ``SecretStr``, so they never print.

``load_settings(environ)`` reads only the mapping it is given, so tests and tools can build
settings without touching the process environment.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.onnx_inference import Inference
from aiplatform_dagster.rag.query.retriever import FusionMethod

SAMPLE_CORPUS_DIR = Path(__file__).resolve().parent / "sample_corpus"
PROFILE_VARIABLE = "AIPLATFORM_PROFILE"


class ConfigError(PlatformError):
    """A setting has a value that cannot be used; the message names the variable."""


class Section(BaseModel):
    """A group of settings read from variables named ``{prefix}{FIELD}`` (or a field's alias)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix: ClassVar[str] = "AIPLATFORM_"

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable that sets field ``name``."""
        field = cls.model_fields[name]
        return field.alias or f"{cls.prefix}{name.upper()}"


class PathSettings(Section):
    storage_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "storage",
        description="Artifacts: index releases, builds, caches, benchmark corpora.",
    )
    documents_dir: Path = Field(
        default=SAMPLE_CORPUS_DIR, description="Folder ingestion reads and the sensor watches."
    )


class IngestSettings(Section):
    max_file_bytes: int = Field(default=5_000_000, gt=0, description="Larger files are skipped.")
    follow_external_symlinks: bool = Field(
        default=False, description="Follow links that leave the documents folder."
    )
    max_removed_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Refuse a run that would remove more than this share of the documents.",
    )
    ingest_shards: int = Field(
        default=4,
        gt=0,
        lt=1000,
        description="Shards of scale-out ingestion (embedding_shards' partitions): documents "
        "are hashed into this many, each embedded by its own run on the GPU pool.",
    )


class EmbeddingSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_EMBEDDING_"
    provider: Literal["sentence-transformers", "openai"] = Field(
        default="sentence-transformers",
        description="Local sentence-transformers model, or an OpenAI-compatible endpoint.",
    )
    model: str | None = Field(
        default=None,
        description="sentence-transformers folder (default: packaged all-MiniLM-L6-v2), "
        "models:/embedder@champion (the platform's fine-tuned embedder: each release keeps the "
        "version that built it), or the OpenAI embeddings model (default text-embedding-3-small).",
    )
    device: str = Field(default="cpu", description="cpu, cuda or cuda:N.")
    batch_size: int = Field(default=64, gt=0, description="Texts per encoder batch.")
    dimension: int = Field(default=1536, gt=0, description="Vector size of the openai provider.")
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible embeddings endpoint (unset: api.openai.com)."
    )
    api_key: SecretStr | None = Field(
        default=None, alias="OPENAI_API_KEY", description="Key of the OpenAI(-compatible) API."
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Per embeddings request.")
    max_retries: int = Field(default=2, ge=0, description="Retries of a failed request.")


class VectorSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_VECTOR_"
    backend: Literal["embedded", "weaviate"] = Field(
        default="embedded",
        description="Index in the release's segments (embedded), or a Weaviate server.",
    )
    approximate_min_rows: int = Field(
        default=500_000,
        gt=0,
        description="Embedded backend: segments with at least this many rows get an IVF index "
        "(faiss, 8-bit codes, exact re-scoring) instead of the exact scan.",
    )
    approximate_recall: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Recall@10 against exact search an IVF index must measure when its segment "
        "is written; below it the segment keeps the exact scan.",
    )


class WeaviateSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_WEAVIATE_"
    url: str | None = Field(default=None, description="HTTP URL, e.g. http://weaviate:8080.")
    grpc_port: int | None = Field(default=None, gt=0, description="gRPC port (unset: 50051).")
    api_key: SecretStr | None = Field(
        default=None, alias="WEAVIATE_API_KEY", description="Weaviate API key."
    )
    prefix_name: str = Field(
        default="Aiplatform",
        alias="AIPLATFORM_WEAVIATE_PREFIX",
        description="Collection and alias prefix, so environments can share one server.",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Connect, query and insert.")


class ReleaseSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_RELEASE_"
    keep: int = Field(default=5, ge=1, description="Newest releases always kept.")
    keep_days: float = Field(default=7.0, ge=0, description="Releases younger than this kept.")
    lock_timeout_s: float = Field(default=600.0, gt=0, description="Wait for another writer.")


class RerankerSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_RERANKER_"
    model: str | None = Field(
        default=None,
        description="CrossEncoder folder, hub name or MLflow URI (models:/reranker@champion "
        "follows the alias).",
    )
    device: str = Field(default="cpu", description="cpu, cuda or cuda:N.")


class LLMConfig(Section):
    prefix: ClassVar[str] = "AIPLATFORM_LLM_"
    model: str = Field(default="gpt-4o-mini", description="Model, or Azure deployment.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible chat endpoint.")
    api_key: SecretStr | None = Field(
        default=None, alias="OPENAI_API_KEY", description="Key of the OpenAI(-compatible) API."
    )
    azure_endpoint: str | None = Field(
        default=None, alias="AZURE_OPENAI_ENDPOINT", description="Azure OpenAI instead."
    )
    azure_api_key: SecretStr | None = Field(
        default=None, alias="AZURE_OPENAI_API_KEY", description="Key of the Azure endpoint."
    )
    api_version: str | None = Field(
        default=None, alias="OPENAI_API_VERSION", description="Azure OpenAI API version."
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=1024, gt=0, description="Longest answer.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per attempt.")
    max_retries: int = Field(default=2, ge=0, description="Retries of a failed call.")
    judge_model: str | None = Field(
        default=None,
        alias="AIPLATFORM_JUDGE_MODEL",
        description="Model that grades answers in answer_eval (unset: the answering model).",
    )
    judge_repeats: int = Field(
        default=3,
        ge=1,
        alias="AIPLATFORM_JUDGE_REPEATS",
        description="Verdicts per answer in answer_eval (mean and standard deviation; replies "
        "are cached in the storage folder, so a rerun costs nothing).",
    )


class CacheSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_CACHE_"
    redis_url: str | None = Field(
        default=None,
        alias="AIPLATFORM_REDIS_URL",
        description="The platform's Redis: response cache and agents' shared memory (unset: "
        "SQLite in the storage folder, memory in the process).",
    )
    redis_prefix: str = Field(
        default="aiplatform:cache:",
        alias="AIPLATFORM_REDIS_PREFIX",
        description="Key prefix, so environments can share one Redis.",
    )
    ttl_s: int = Field(default=7 * 24 * 3600, gt=0, description="Seconds an answer is kept.")


class QuerySettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_QUERY_"
    candidates: int = Field(default=10, gt=0, description="Fused candidates the reranker scores.")
    top_n: int = Field(default=3, gt=0, description="Chunks kept after reranking.")
    dense_weight: float = Field(default=0.7, ge=0, le=1, description="Semantic share of hybrid.")
    fusion: FusionMethod = Field(default=FusionMethod.SCORE, description="Hybrid fusion method.")
    context_tokens: int = Field(default=1800, gt=0, description="Token budget of the sources.")
    keyword_max_words: int = Field(
        default=4, ge=0, description="Exact-match queries up to this long go to keyword search."
    )
    semantic_min_words: int = Field(
        default=12, gt=0, description="Plain questions this long or longer go to dense search."
    )
    router_model: str | None = Field(
        default=None,
        description="Trained router, e.g. models:/query_router@champion (unset: the rules above).",
    )
    inference: Inference = Field(
        default="torch",
        description="How serving releases run the query encoder and the reranker on CPU: "
        "'torch', 'onnx' (the same float model, fused into one onnxruntime graph) or "
        "'onnx-int8' (its int8 copy). An ONNX path is pinned only when the ONNX gate passes "
        "(other engines, the CLI and evaluation run PyTorch).",
    )
    onnx_max_ndcg_loss: float = Field(
        default=0.005,
        ge=0,
        description="Largest routed nDCG@10 loss on the smoke queries, against PyTorch, at "
        "which a serving release still pins the ONNX path it asked for.",
    )
    price_table: FilePath | None = Field(
        default=None, alias="AIPLATFORM_PRICE_TABLE", description="JSON of USD per 1M tokens."
    )


class MlflowSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_MLFLOW_"
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server or store (unset: SQLite in the storage folder).",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where new experiments keep artifacts, e.g. wasbs://… (unset: storage folder).",
    )
    experiment: str = Field(default="aiplatform", description="Experiment of the platform's runs.")
    model_prefix: str = Field(
        default="",
        description="Prefix of registered model names, so environments can share one server.",
    )
    ui_url: str | None = Field(
        default=None,
        description="MLflow UI for links in Dagster (unset: the tracking URI when it is http(s), "
        "else http://127.0.0.1:5000, which make dev serves).",
    )


class TrainingSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_TRAINING_"
    benchmark_path: Path | None = Field(
        default=None,
        description="Labelled BEIR folder (qrels/train.tsv) the training group learns from, also "
        "when the drift sensor or the schedule starts it (unset: the golden set, which has no "
        "train split, so nothing is trained).",
    )


class MonitoringSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_MONITORING_"
    query_log: bool = Field(default=True, description="Record each query's features for drift.")
    query_log_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of the query log (unset: Parquet in the storage folder).",
    )
    ks_pvalue: float = Field(
        default=0.01, gt=0, lt=1, description="A feature drifts when its KS p-value is below."
    )
    psi_threshold: float = Field(
        default=0.2, gt=0, description="A feature drifts when its PSI is above."
    )
    embedding_threshold: float = Field(
        default=0.2, gt=0, description="Embeddings drift when their PSI is above."
    )
    retrain_cooldown_h: float = Field(
        default=24.0, ge=0, description="Hours between retraining runs the drift sensor asks for."
    )


class AgentSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_AGENTS_"
    registry: Path | None = Field(
        default=None,
        description="Agent registry: a YAML file or a folder of them (unset: the packaged "
        "agents/registry.yaml).",
    )
    checkpoint_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of agent threads and checkpoints (unset: SQLite in the "
        "storage folder). PgBouncer in transaction mode works: no prepared statements are used.",
    )
    pool_max_size: int = Field(default=10, gt=0, description="Checkpointer connections at most.")
    pool_max_idle_s: float = Field(
        default=300.0, gt=0, description="A pooled connection idle this long is closed."
    )
    pool_max_lifetime_s: float = Field(
        default=1800.0, gt=0, description="A pooled connection this old is replaced."
    )
    memory_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="Seconds a thread's shared memory lives after its last write (Redis when "
        "AIPLATFORM_REDIS_URL is set, else in the process).",
    )
    memory_prefix: str = Field(
        default="aiplatform:agents:", description="Redis key prefix of agent memory."
    )
    sql_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN the sql_query tool reads (read-only)."
    )
    sql_max_rows: int = Field(default=200, gt=0, description="Rows sql_query returns at most.")
    http_allowed_hosts: str = Field(
        default="",
        description="Comma-separated hosts http_get may fetch from (unset: none).",
    )
    http_max_bytes: int = Field(default=1_000_000, gt=0, description="Largest http_get body.")
    trace_dir: Path | None = Field(
        default=None,
        description="JSON-lines traces, one file per thread (unset: agents/traces in the "
        "storage folder).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OpenTelemetry collector; when set, agent steps, API requests and query "
        "stages are also exported as spans.",
    )
    langsmith_api_key: SecretStr | None = Field(
        default=None,
        alias="LANGSMITH_API_KEY",
        description="When set, LangGraph runs are also traced to LangSmith.",
    )
    retention_days: float = Field(
        default=30.0, gt=0, description="Finished threads older than this are pruned."
    )


class ServingSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_SERVING_"
    api_keys_file: Path | None = Field(
        default=None,
        description="YAML of API keys, stored hashed with their scopes and rate limits "
        "(unset: serving/api_keys.yaml in the storage folder; `aiplatform key create` adds one).",
    )
    max_body_bytes: int = Field(default=65_536, gt=0, description="Largest request body.")
    max_query_chars: int = Field(default=2_000, gt=0, description="Longest question.")
    refresh_s: float = Field(
        default=5.0, gt=0, description="Seconds between checks for a new live release."
    )
    cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS (unset: CORS off)."
    )
    smoke_max_ndcg_drop: float = Field(
        default=0.02,
        ge=0,
        description="How far a new serving release's routed nDCG@10 on the smoke queries may "
        "fall below the live release's before it is refused.",
    )
    monthly_budget_usd: float = Field(
        default=0.0,
        ge=0,
        description="Monthly LLM budget in USD, exported beside month-to-date spend for the "
        "80% and 100% alerts (0: no budget).",
    )
    audit_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of the append-only audit log (unset: JSON lines per day in "
        "serving/audit/ in the storage folder).",
    )
    audit_text: Literal["plain", "hashed", "redacted"] = Field(
        default="hashed",
        description="How the audit log keeps question and answer text: plain, hashed (SHA-256) "
        "or redacted (its length only).",
    )
    smoke_queries: Path | None = Field(
        default=None,
        description="Folder of judged queries (queries.jsonl, qrels/test.tsv, as BEIR) a new "
        "serving release is smoke-tested on (unset: the golden queries of the sample corpus; "
        "point it at questions about your own documents).",
    )


class ExecutionSettings(Section):
    prefix: ClassVar[str] = "AIPLATFORM_EXECUTION_"
    executor: Literal["multiprocess", "in_process", "k8s"] = Field(
        default="multiprocess",
        description="How Dagster runs a run's steps: 'multiprocess' (one process each, on this "
        "machine or in the run's pod), 'in_process' (one after another in the run's process, "
        "which loads the code location and each model once: `make dev` sets it) or 'k8s' (each "
        "step its own Kubernetes Job on the node pool its compute profile names; the "
        "production Helm values set it).",
    )
    max_concurrent_gpu_steps: int = Field(
        default=1,
        gt=0,
        description="GPU steps one run may have at once under the k8s executor (runs are "
        "limited across the deployment by the run queue's tag limits).",
    )


class Settings(BaseModel):
    """Everything the platform reads, grouped by what it configures."""

    model_config = ConfigDict(frozen=True)

    paths: PathSettings = Field(default_factory=PathSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    vectors: VectorSettings = Field(default_factory=VectorSettings)
    weaviate: WeaviateSettings = Field(default_factory=WeaviateSettings)
    releases: ReleaseSettings = Field(default_factory=ReleaseSettings)
    reranker: RerankerSettings = Field(default_factory=RerankerSettings)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)

    def replace(self, **sections: Mapping[str, Any]) -> "Settings":
        """A copy with fields of named sections replaced, validated like the environment."""
        values = self.model_dump(by_alias=False)
        for name, changes in sections.items():
            values[name] = {**values[name], **changes}
        return _validated(values, source="overrides")


@dataclass(frozen=True)
class Variable:
    """One environment variable: what it sets and its value in some settings."""

    name: str
    section: str
    value: str
    default: str
    description: str


def describe(settings: "Settings") -> list[Variable]:
    """Every variable the platform reads, with its effective value (secrets masked)."""
    described = []
    for name, section in _sections().items():
        values = getattr(settings, name)
        for field_name, field in section.model_fields.items():
            default = field.get_default(call_default_factory=True)
            described.append(
                Variable(
                    name=section.variable(field_name),
                    section=name,
                    value=_shown(getattr(values, field_name)),
                    default=_shown(default),
                    description=field.description or "",
                )
            )
    return described


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(set, hidden)"
    if value is None:
        return "(unset)"
    return str(value.value if isinstance(value, Enum) else value)


def load_settings(environ: Mapping[str, str] | None = None) -> "Settings":
    """Settings from ``environ`` (the process environment when None) and its profile file.

    Unset and empty variables both mean "not given". A value that does not parse raises
    ``ConfigError`` naming the variable, the value and what it must be.
    """
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if v.strip()}
    values: dict[str, dict[str, Any]] = _read_profile(env.get(PROFILE_VARIABLE))
    for name, section in _sections().items():
        for field_name in section.model_fields:
            variable = section.variable(field_name)
            if variable in env:
                values.setdefault(name, {})[field_name] = env[variable]
    return _validated(values, source="environment")


def _sections() -> dict[str, type[Section]]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
    }


def _validated(values: dict[str, dict[str, Any]], source: str) -> Settings:
    sections = _sections()
    built: dict[str, Section] = {}
    for name, section in sections.items():
        given = values.get(name, {})
        try:
            built[name] = section.model_validate(
                {_input_key(section.model_fields[k], k): v for k, v in given.items()}
            )
        except ValidationError as error:
            raise ConfigError(_explain(name, section, error, given, source)) from None
    return Settings(**built)


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in (field.annotation, *get_args(field.annotation))


def _input_key(field: FieldInfo, name: str) -> str:
    return field.alias or name


def _explain(
    name: str, section: type[Section], error: ValidationError, given: dict, source: str
) -> str:
    """One line per problem, naming the variable (or, for overrides, ``section.field``)."""
    problems = []
    for item in error.errors():
        field_name = next((str(part) for part in item["loc"]), "")
        by_alias = {f.alias: n for n, f in section.model_fields.items() if f.alias}
        field_name = by_alias.get(field_name, field_name)
        if field_name in section.model_fields:
            variable = (
                section.variable(field_name) if source == "environment" else f"{name}.{field_name}"
            )
            value = given.get(field_name, "<unset>")
            shown = "<secret>" if _is_secret(section.model_fields[field_name]) else repr(value)
            problems.append(f"{variable}={shown}: {item['msg']}")
        else:
            problems.append(f"{field_name}: {item['msg']}")
    return f"invalid configuration ({source}): " + "; ".join(problems)


def _read_profile(path: str | None) -> dict[str, dict[str, Any]]:
    """A YAML file of sections, e.g. ``llm: {model: gpt-4o}``; secrets are refused."""
    if not path:
        return {}
    try:
        profile = yaml.safe_load(Path(path).read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{PROFILE_VARIABLE}={path}: cannot read the profile ({error})") from None
    sections = _sections()
    if not isinstance(profile, dict) or not set(profile) <= set(sections):
        raise ConfigError(
            f"{PROFILE_VARIABLE}={path}: expected a mapping of sections "
            f"{sorted(sections)}, got {sorted(profile) if isinstance(profile, dict) else profile!r}"
        )
    for name, values in profile.items():
        fields = sections[name].model_fields
        secrets = [key for key in values or {} if key in fields and _is_secret(fields[key])]
        if secrets:
            raise ConfigError(
                f"{PROFILE_VARIABLE}={path}: {name}.{secrets[0]} is a secret; set it in the "
                "environment, never in a file"
            )
    return {name: dict(values or {}) for name, values in profile.items()}
