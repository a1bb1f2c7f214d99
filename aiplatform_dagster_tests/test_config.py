"""The one configuration: what each variable means, where it is read from, and what it builds."""

import json
from pathlib import Path

import pytest

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR, ConfigError, describe, load_settings
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.query.retriever import FusionMethod


def test_an_empty_mapping_gives_laptop_defaults_and_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", "http://from-the-process/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process")
    settings = load_settings({})
    assert settings.paths.documents_dir == SAMPLE_CORPUS_DIR
    assert settings.llm.base_url is None and settings.llm.api_key is None
    assert settings.vectors.backend == "embedded" and settings.cache.redis_url is None
    assert not factory.llm_settings(settings).is_configured


def test_the_embeddings_endpoint_and_the_llm_endpoint_are_configured_separately() -> None:
    llm_only = load_settings({"AIPLATFORM_LLM_BASE_URL": "http://vllm:8000/v1"})
    assert llm_only.embedding.base_url is None
    assert factory.llm_settings(llm_only).base_url == "http://vllm:8000/v1"
    embeddings_only = load_settings({"AIPLATFORM_EMBEDDING_BASE_URL": "http://tei:8080/v1"})
    assert embeddings_only.llm.base_url is None
    assert not factory.llm_settings(embeddings_only).is_configured
    legacy = load_settings({"OPENAI_BASE_URL": "http://anything/v1"})
    assert legacy.llm.base_url is None and legacy.embedding.base_url is None


def test_azure_uses_the_azure_key_and_the_judge_model_is_its_own_setting() -> None:
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
            "AZURE_OPENAI_API_KEY": "az-1",
            "OPENAI_API_KEY": "sk-ignored",
            "OPENAI_API_VERSION": "2024-06-01",
            "AIPLATFORM_LLM_MODEL": "gpt4o-prod",
            "AIPLATFORM_JUDGE_MODEL": "gpt4o-judge",
        }
    )
    answering, judging = factory.llm_settings(settings), factory.llm_settings(settings, True)
    assert answering.api_key == "az-1" and answering.model == "gpt4o-prod"
    assert judging.model == "gpt4o-judge" and judging.api_key == "az-1"


def test_secrets_never_print() -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-very-secret", "WEAVIATE_API_KEY": "wv"})
    assert "sk-very-secret" not in repr(settings) and "wv'" not in str(settings.model_dump())
    assert settings.llm.api_key.get_secret_value() == "sk-very-secret"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AIPLATFORM_QUERY_TOP_N", "three", "valid integer"),
        ("AIPLATFORM_LLM_TIMEOUT_S", "-5", "greater than 0"),
        ("AIPLATFORM_VECTOR_BACKEND", "pinecone", "'embedded' or 'weaviate'"),
        ("AIPLATFORM_QUERY_FUSION", "best", "score"),
        ("AIPLATFORM_PRICE_TABLE", "/no/such/prices.json", "file"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_must_be(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({variable: value})
    assert f"{variable}='{value}'" in str(error.value)
    assert expected in str(error.value)


def test_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"AIPLATFORM_EMBEDDING_MAX_RETRIES": "many", "OPENAI_API_KEY": "sk-x"})
    assert "sk-x" not in str(error.value)


def test_a_yaml_profile_sets_defaults_the_environment_overrides(tmp_path: Path) -> None:
    profile = tmp_path / "production.yaml"
    profile.write_text("query: {top_n: 5, candidates: 20}\nvectors: {backend: weaviate}\n")
    settings = load_settings({"AIPLATFORM_PROFILE": str(profile), "AIPLATFORM_QUERY_TOP_N": "4"})
    assert (settings.query.top_n, settings.query.candidates) == (4, 20)
    assert settings.vectors.backend == "weaviate"


@pytest.mark.parametrize(
    "secret",
    ["llm: {api_key: sk-in-a-file}", "monitoring: {query_log_dsn: 'postgresql://u:pw@db/q'}"],
)
def test_a_profile_holding_a_secret_is_refused(tmp_path: Path, secret: str) -> None:
    """Any SecretStr field is a secret, whatever its name (a DSN holds a password)."""
    profile = tmp_path / "leaky.yaml"
    profile.write_text(secret + "\n")
    with pytest.raises(ConfigError, match="secret; set it in the environment"):
        load_settings({"AIPLATFORM_PROFILE": str(profile)})


def test_a_profile_with_an_unknown_section_names_the_known_ones(tmp_path: Path) -> None:
    profile = tmp_path / "typo.yaml"
    profile.write_text("querry: {top_n: 5}\n")
    with pytest.raises(ConfigError, match="'query'"):
        load_settings({"AIPLATFORM_PROFILE": str(profile)})


def test_the_dagster_resource_reads_the_same_settings_plus_run_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("AIPLATFORM_QUERY_DENSE_WEIGHT", "0.6")
    resource = PlatformResource(overrides={"query": {"top_n": 2, "fusion": "rrf"}})
    settings = resource.settings()
    assert settings.paths.storage_dir == tmp_path
    options = factory.query_options(settings)
    assert (options.top_n, options.hybrid.dense_weight) == (2, 0.6)
    assert options.hybrid.fusion is FusionMethod.RRF
    assert resource.repository().root == IndexRepository(tmp_path / "ingestion").root
    with pytest.raises(ConfigError, match="query"):
        PlatformResource(overrides={"query": {"top_n": 0}}).settings()


def test_the_engine_is_built_from_settings_alone_over_the_current_release(
    sample_repository: IndexRepository,
) -> None:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(sample_repository.root.parent)})
    engine = factory.build_query_engine(settings)
    assert engine.retriever.release_id == sample_repository.pointer()
    assert engine.defaults == factory.query_options(settings)
    answer = engine.ask("What does error AIP-4031 mean?")
    assert answer.sources and answer.sources[0]["doc_id"] == "operations/troubleshooting.txt"


def test_the_price_table_file_is_read_from_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-llm": {"input": 5, "output": 0}}))
    settings = load_settings({"AIPLATFORM_PRICE_TABLE": str(path)})
    assert factory.price_table(settings).cost("my-llm", 1_000_000, 0) == pytest.approx(5.0)
    assert not factory.price_table(load_settings({})).priced("my-llm")


def test_the_readme_documents_every_variable() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [v.name for v in describe(load_settings({})) if f"`{v.name}`" not in readme]
    assert missing == []
