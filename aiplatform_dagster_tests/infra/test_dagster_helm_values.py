"""The Dagster Helm values (k8s/dagster/), checked offline as Helm and Dagster would use them.

Helm validates the merged values (chart defaults, then values.yaml, one environment's overrides
and the install command's --set values) against the chart's JSON schema; here the same merge is
validated against the pinned schemas in ``dagster_chart/``, whose Kubernetes types are resolved
from kubernetes-validate's bundled definitions for the version terraform/ pins, never from the
network. Then the dagster.yaml
the chart renders from the values (its templates' mapping, mirrored below) is given to Dagster's
own config schemas, and the run and step Jobs are built from it by dagster-k8s and validated
strictly, as test_step_jobs.py does for every step.
"""

import copy
import functools
import importlib
import importlib.metadata
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import sqlalchemy
import yaml
from dagster import DagsterRun
from dagster._config import Shape, process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._serdes.config_class import class_from_code_pointer
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_postgres.utils import get_conn_string
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from kubernetes.client import ApiClient
from kubernetes.utils import parse_quantity
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster.defs.compute import (
    GPU_TAINT,
    POOL_LABEL,
    POOL_TAG,
    PROFILES,
    STEP_SERVICE_ACCOUNT,
    ComputePool,
)
from aiplatform_dagster_tests.infra import dagster_jobs
from aiplatform_dagster_tests.infra.charts import (
    backend_wiring,
    dagster_values,
    documented_backend_wiring,
)
from aiplatform_dagster_tests.infra.kubernetes import (
    PROJECT_ROOT,
    TERRAFORM_DIR,
    kubernetes_version,
    load_hcl,
    terraform_variable_default,
    validate_manifests,
)
from aiplatform_dagster_tests.infra.settings import secret_variables

pytestmark = pytest.mark.usefixtures("no_network")  # nothing here is fetched

VALUES_DIR = PROJECT_ROOT / "k8s" / "dagster"
CHART_DIR = Path(__file__).parent / "dagster_chart"
SUBCHART = "dagster-user-deployments"
ENVIRONMENTS = ("staging", "production")
NAMESPACE = "aiplatform"
RELEASE = "dagster"
"""`helm upgrade --install dagster dagster/dagster --namespace aiplatform` (see the README)."""
STORAGE_CLAIM, STORAGE_PATH = "aiplatform-storage", "/var/lib/aiplatform/storage"
RUN_USER = 10001
SECRETS = {
    ("aiplatform-postgres", "postgresql-password"),
    ("aiplatform-llm", "api-key"),
    ("aiplatform-api-keys", "api_keys.yaml"),
    ("aiplatform-redis", "url"),
    ("aiplatform-weaviate", "api-key"),
}
"""The Secrets (name, key) the infrastructure contract defines; nothing else may be referenced."""
QUEUED_RUN_COORDINATOR = ("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator")
OVERRIDABLE_LISTS = {(*QUEUED_RUN_COORDINATOR, "tagConcurrencyLimits")}
"""Lists an environment may restate whole; any other list it set would silently drop the base's."""

REGISTRIES = {"staging": "acraiplatformstg.azurecr.io", "production": "acraiplatformprd.azurecr.io"}
"""terraform output registry_login_server of each environment (acr<project><env>)."""


def install_set(environment: str) -> dict[tuple[Any, ...], str]:
    """What the README's install command passes with --set. Helm writes each into the values
    the files gave (strvals.ParseInto), so setting one field of the deployment keeps the rest."""
    image = (SUBCHART, "deployments", 0, "image")
    client_id = ("serviceAccount", "annotations", "azure.workload.identity/client-id")
    return {
        (*image, "repository"): f"{REGISTRIES[environment]}/aiplatform-dagster",
        (*image, "tag"): "0123abc-cuda",
        client_id: str(uuid.UUID(int=1)),
    }


KUBERNETES_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
KUBERNETES_SCHEMA_HOSTS = (
    "https://kubernetesjsonschema.dev/",
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/",
    "https://raw.githubusercontent.com/instrumenta/kubernetes-json-schema/master/",
)
"""Where the chart's schemas point for Kubernetes types; all served by the bundled definitions."""


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def coalesce(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values onto a chart's defaults: as ``merge``; null deletes."""
    result = dict(defaults)
    for key, value in values.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(defaults.get(key), dict):
            result[key] = coalesce(defaults[key], value)
        else:
            result[key] = value
    return result


def user_values(environment: str) -> dict[str, Any]:
    """``--values values.yaml --values values-<environment>.yaml --set ...``."""
    values = dagster_values(environment)
    for path, value in install_set(environment).items():
        set_path(values, path, value)
    return values


@functools.cache
def _chart_values(environment: str) -> dict[str, Any]:
    return coalesce(load_yaml(CHART_DIR / "values.yaml"), user_values(environment))


def chart_values(environment: str) -> dict[str, Any]:
    """The values the ``dagster`` chart sees (its schema validates exactly these)."""
    return copy.deepcopy(_chart_values(environment))


def subchart_values(values: dict[str, Any]) -> dict[str, Any]:
    """The values the bundled user-code subchart sees: its section, and the parent's globals."""
    defaults = load_yaml(CHART_DIR / SUBCHART / "values.yaml")
    merged = coalesce(defaults, values[SUBCHART])
    merged["global"] = coalesce(defaults["global"], values["global"])
    return merged


@functools.cache
def kubernetes_definitions() -> dict[str, Any]:
    """kubernetes-validate's definitions for the pinned version; the chart points into
    ``definitions``, the bundled file keeps them under ``$defs``: both names, one mapping."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = folder / f"v{kubernetes_version()}.0-local" / "_definitions.json"
    contents = json.loads(path.read_text())
    contents["definitions"] = contents["$defs"]
    return contents


def retrieve_kubernetes_definitions(uri: str) -> Resource:
    """Serves the chart's Kubernetes references from the bundled file; any other URI raises."""
    bundled = uri == KUBERNETES_DEFINITIONS_ID
    remote = uri.startswith(KUBERNETES_SCHEMA_HOSTS) and uri.endswith("/_definitions.json")
    if not (bundled or remote):
        raise NoSuchResource(ref=uri)
    return Resource.from_contents(kubernetes_definitions(), default_specification=DRAFT202012)


def schema_errors(
    values: dict[str, Any], schema_path: Path, registry: Registry | None = None
) -> list[tuple[tuple[Any, ...], str]]:
    """Every violation of the chart schema, as (path in the values, message)."""
    schema = json.loads(schema_path.read_text())
    validator_class = validator_for(schema, default=Draft202012Validator)
    if registry is None:
        registry = Registry(retrieve=retrieve_kubernetes_definitions)
    validator = validator_class(schema, registry=registry)
    return [(tuple(error.absolute_path), error.message) for error in validator.iter_errors(values)]


def main_schema_errors(values: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    return schema_errors(values, CHART_DIR / "values.schema.json")


def subchart_schema_errors(values: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    return schema_errors(subchart_values(values), CHART_DIR / SUBCHART / "values.schema.json")


def deployment(values: dict[str, Any]) -> dict[str, Any]:
    [code_location] = values[SUBCHART]["deployments"]
    return code_location


def k8s_launcher_values(values: dict[str, Any]) -> dict[str, Any]:
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def queued_coordinator(values: dict[str, Any]) -> dict[str, Any]:
    for key in QUEUED_RUN_COORDINATOR:
        values = values[key]
    return values


def gpu_run_limit(values: dict[str, Any]) -> int:
    """Runs tagged for the GPU pool the queue lets run at once."""
    [limit] = [
        limit["limit"]
        for limit in queued_coordinator(values)["tagConcurrencyLimits"]
        if limit["key"] == POOL_TAG and limit.get("value") == ComputePool.GPU.value
    ]
    return limit


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def service_account_name(values: dict[str, Any]) -> str:
    """The chart's ``dagster.serviceAccountName`` helper."""
    return values["global"]["serviceAccountName"] or values["serviceAccount"]["name"]


def run_launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    """The ``run_launcher.config`` the chart writes (helpers/instance/_run-launcher.tpl)."""
    launcher = k8s_launcher_values(values)
    optional = {
        "labels": launcher.get("labels"),
        "resources": launcher.get("resources"),
        "security_context": launcher.get("securityContext"),
        "scheduler_name": launcher.get("schedulerName"),
        "run_k8s_config": {
            camel_to_snake(key): value
            for key, value in (launcher.get("runK8sConfig") or {}).items()
            if value
        },
    }
    return {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": service_account_name(values),
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": [source["name"] for source in launcher["envConfigMaps"]],
        "env_secrets": [source["name"] for source in launcher["envSecrets"]],
        "env_vars": launcher["envVars"],
        "volume_mounts": launcher["volumeMounts"],
        "volumes": launcher["volumes"],
        **{key: value for key, value in optional.items() if value},
    }


def instance_config(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml sections the chart renders from the values (configmap-instance.yaml)."""
    postgres = values["postgresql"]
    postgres_db = {
        "username": postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
        "params": postgres["postgresqlParams"],
    }
    if postgres.get("postgresqlScheme"):
        postgres_db["scheme"] = postgres["postgresqlScheme"]
    storage = {
        f"{kind}_storage": {
            "module": f"dagster_postgres.{module}",
            "class": cls,
            "config": {"postgres_db": postgres_db},
        }
        for kind, module, cls in (
            ("run", "run_storage", "PostgresRunStorage"),
            ("event_log", "event_log", "PostgresEventLogStorage"),
            ("schedule", "schedule_storage", "PostgresScheduleStorage"),
        )
    }
    daemon, queued = values["dagsterDaemon"], queued_coordinator(values)
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    return {
        **storage,
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": run_launcher_config(values),
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {camel_to_snake(key): value for key, value in monitoring.items()},
        "run_retries": {camel_to_snake(key): value for key, value in retries.items()},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def code_location_container_context(values: dict[str, Any]) -> dict[str, Any]:
    """What the code server passes to its runs under includeConfigInLaunchedRuns (the pinned
    subchart's ``dagsterUserDeployments.k8sContainerContext`` helper)."""
    code_location = deployment(values)
    k8s: dict[str, Any] = {
        "image_pull_policy": code_location["image"]["pullPolicy"],
        "env_config_maps": [
            f"{RELEASE}-{SUBCHART}-{code_location['name']}-user-env",
            *[source["name"] for source in code_location.get("envConfigMaps") or []],
        ],
        "namespace": NAMESPACE,
        "service_account_name": service_account_name(values),
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if code_location.get("envSecrets"):
        k8s["env_secrets"] = [source["name"] for source in code_location["envSecrets"]]
    for key in ("volumeMounts", "volumes", "labels", "resources"):
        if code_location.get(key):
            k8s[camel_to_snake(key)] = code_location[key]
    if isinstance(code_location.get("env"), list) and code_location["env"]:
        k8s["env"] = code_location["env"]
    return {"k8s": k8s}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig pointing nowhere: dagster-k8s builds Jobs, nothing is ever sent."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "offline", "user": {"token": "unused"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
                "current-context": "offline",
            }
        )
    )
    return path


def run_launcher(values: dict[str, Any], kubeconfig: Path) -> K8sRunLauncher:
    """The launcher Dagster builds from the rendered dagster.yaml, minus the cluster."""
    config = process_config(K8sRunLauncher.config_type(), run_launcher_config(values))
    assert config.success, config.errors
    offline = {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return K8sRunLauncher(**{**config.value, **offline})


def launched_run(values: dict[str, Any]) -> DagsterRun:
    """A run of the code location, carrying its container context as the gRPC server does."""
    image = deployment(values)["image"]
    repository = RepositoryPythonOrigin(
        executable_path="/opt/aiplatform/.venv/bin/python",
        code_pointer=ModuleCodePointer("aiplatform_dagster.definitions", "defs", None),
        container_image=f"{image['repository']}:{image['tag']}",
        container_context=code_location_container_context(values),
    )
    origin = JobPythonOrigin("__ASSET_JOB", repository)
    return DagsterRun(job_name=origin.job_name, run_id=str(uuid.uuid4()), job_code_origin=origin)


def run_job(values: dict[str, Any], launcher: K8sRunLauncher) -> dict[str, Any]:
    """The run worker's Job, as ``K8sRunLauncher._launch_k8s_job_with_args`` builds it."""
    run = launched_run(values)
    context = launcher.get_container_context_for_run(run)
    assert context.namespace == NAMESPACE
    image = run.job_code_origin.repository_origin.container_image
    manifest = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run"],
        job_name=f"dagster-run-{run.run_id}",
        pod_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )
    return ApiClient().sanitize_for_serialization(manifest)


def step_job(values: dict[str, Any], launcher: K8sRunLauncher, profile: str) -> dict[str, Any]:
    """A step's Job under the k8s_job_executor, for a step of ``profile``."""
    run = launched_run(values)
    tags = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in PROFILES[profile].op_tags().items()
    }
    image = run.job_code_origin.repository_origin.container_image
    return dagster_jobs.step_job(run, launcher, profile, tags, image)


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def writable_tmp(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> bool:
    """/tmp is an emptyDir: the image's HOME, where caches land under a read-only root."""
    scratch = {volume["name"] for volume in volumes if "emptyDir" in volume}
    return any(m["mountPath"] == "/tmp" and m["name"] in scratch for m in mounts)


def long_running_pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The code server, webserver and daemon pods, with the fields their templates copy from
    the values; validated strictly, so a misspelt field the chart's lenient schema lets through
    still fails."""
    code_location = deployment(values)
    components = {
        "code-server": (code_location, code_location.get("env") or []),
        "webserver": (values["dagsterWebserver"], values["dagsterWebserver"]["env"]),
        "daemon": (values["dagsterDaemon"], values["dagsterDaemon"]["env"]),
    }
    pods = {}
    for name, (component, env) in components.items():
        container = {
            "name": name,
            "image": f"{component['image']['repository']}:{component['image']['tag'] or 'dev'}",
            "env": env,
            "resources": component["resources"],
            "securityContext": component["securityContext"],
            "volumeMounts": component.get("volumeMounts") or [],
        }
        pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "serviceAccountName": service_account_name(values),
                "securityContext": component["podSecurityContext"],
                "nodeSelector": component["nodeSelector"],
                "volumes": component.get("volumes") or [],
                "containers": [container],
            },
        }
    return pods


def environment_variables(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every env entry the values give a Dagster container, run or step."""
    run_env = (k8s_launcher_values(values).get("runK8sConfig") or {}).get("containerConfig", {})
    return [
        *(deployment(values).get("env") or []),
        *run_env.get("env", []),
        *values["dagsterWebserver"]["env"],
        *values["dagsterDaemon"]["env"],
    ]


def walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a YAML tree, containers included."""
    yield path, value
    if isinstance(value, dict | list):
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            yield from walk(child, (*path, key))


def set_path(values: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    *parents, last = path
    for key in parents:
        values = values[key]
    values[last] = value


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_merged_values_satisfy_the_chart_and_subchart_schemas(environment: str) -> None:
    values = chart_values(environment)
    assert values[SUBCHART]["enableSubchart"]  # so the subchart's own schema applies too
    assert main_schema_errors(values) == []
    assert subchart_schema_errors(values) == []


@pytest.mark.parametrize(
    ("path", "wrong"),
    [
        (("runLauncher", "config", "k8sRunLauncher", "jobNamepsace"), NAMESPACE),
        ((*QUEUED_RUN_COORDINATOR, "tagConcurrencyLimits", 0, "limit"), "two"),
        (("postgresql", "postgresqlScheme"), 5),
        (("dagsterWebserver", "nodeSelector", POOL_LABEL), 1),
        # Kubernetes types, enforced only through the bundled definitions:
        ((SUBCHART, "deployments", 0, "resources", "limits", "cpu"), ["2"]),
        ((SUBCHART, "deployments", 0, "env", 0), {"value": "no name"}),
    ],
    ids=["misspelt-key", "limit-not-int", "scheme-not-string", "selector", "quantity", "env"],
)
def test_the_schema_check_rejects_a_wrong_value_where_it_is(
    path: tuple[Any, ...], wrong: Any
) -> None:
    values = chart_values("production")
    set_path(values, path, wrong)
    errors = main_schema_errors(values)
    assert any(path[: len(at)] == at for at, _ in errors), errors
    if path[0] == SUBCHART:
        assert subchart_schema_errors(values)


def test_schema_references_resolve_from_the_bundled_definitions_only() -> None:
    with pytest.raises(NoSuchResource):
        retrieve_kubernetes_definitions("https://example.com/_definitions.json")
    with pytest.raises(NoSuchResource):
        retrieve_kubernetes_definitions("https://kubernetesjsonschema.dev/v1.18.0/pod-v1.json")
    offline = Registry(retrieve=lambda uri: (_ for _ in ()).throw(NoSuchResource(ref=uri)))
    with pytest.raises(Unresolvable):  # without the bundled definitions nothing validates
        schema_errors(chart_values("production"), CHART_DIR / "values.schema.json", offline)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_dagster_accepts_the_instance_the_values_render(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")  # resolved from the pod's env
    instance = instance_config(chart_values(environment))
    result = process_config(Shape(dagster_instance_config_schema()), instance)
    assert result.success, result.errors
    for section in ("run_storage", "event_log_storage", "run_launcher", "run_coordinator"):
        configurable = class_from_code_pointer(
            instance[section]["module"], instance[section]["class"]
        )
        result = process_config(configurable.config_type(), instance[section]["config"])
        assert result.success, (section, result.errors)
    assert instance["telemetry"] == {"enabled": False}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_storage_is_the_external_postgresql_through_psycopg2_with_a_secret_password(
    environment: str,
) -> None:
    values = chart_values(environment)
    postgres = values["postgresql"]
    assert postgres["enabled"] is False
    assert postgres["postgresqlScheme"] == "postgresql+psycopg2"
    assert postgres["postgresqlHost"].endswith(".postgres.database.azure.com")
    assert postgres["postgresqlParams"]["sslmode"] == "require"  # Azure refuses plain text
    # The chart must not create (and so overwrite) the Secret; its password key stays empty.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert postgres["postgresqlPassword"] == ""
    assert (values["global"]["postgresqlSecretName"], "postgresql-password") in SECRETS
    url = get_conn_string(
        postgres["postgresqlUsername"],
        "unused",
        postgres["postgresqlHost"],
        postgres["postgresqlDatabase"],
        str(postgres["service"]["port"]),
        postgres["postgresqlParams"],
        postgres["postgresqlScheme"],
    )
    dialect = sqlalchemy.engine.make_url(url).get_dialect()
    assert dialect.driver == "psycopg2" and dialect.import_dbapi()  # installed in the image


def test_staging_and_production_never_share_a_database() -> None:
    hosts = {env: chart_values(env)["postgresql"]["postgresqlHost"] for env in ENVIRONMENTS}
    assert len(set(hosts.values())) == len(ENVIRONMENTS), hosts


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_run_queue_limits_runs_tagged_for_the_gpu_pool(environment: str) -> None:
    values = chart_values(environment)
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    assert 1 <= gpu_run_limit(values) < queued_coordinator(values)["maxConcurrentRuns"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_gpu_runs_at_once_fit_the_gpu_nodes_terraform_allows(environment: str) -> None:
    """Each GPU step holds a whole T4 node: the queue never asks for more than the pool has."""
    values = chart_values(environment)
    literal = {v["name"]: v["value"] for v in environment_variables(values) if "value" in v}
    steps_per_run = load_settings(literal).execution.max_concurrent_gpu_steps
    tfvars = load_hcl(TERRAFORM_DIR / "environments" / f"{environment}.tfvars")
    nodes = tfvars.get("gpu_pool_max_count", terraform_variable_default("gpu_pool_max_count"))
    assert gpu_run_limit(values) * steps_per_run <= nodes


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_run_monitoring_fails_runs_that_never_start_and_retries_crashed_ones(
    environment: str,
) -> None:
    daemon = chart_values(environment)["dagsterDaemon"]
    assert daemon["enabled"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    assert monitoring["enabled"] and 0 < monitoring["startTimeoutSeconds"] <= 1800
    assert retries["enabled"] and retries["maxRetries"] >= 1


def test_no_secret_is_written_in_the_values() -> None:
    """Passwords and keys only by Secret reference, in the files and in what Helm receives."""
    credential = re.compile(
        r"://[^/\s:@]+:[^/\s@]+@|\bsk-[A-Za-z0-9_-]{16,}|AccountKey=|-----BEGIN", re.IGNORECASE
    )
    for path in sorted(VALUES_DIR.glob("values*.yaml")):
        assert not credential.search(path.read_text()), path
    secret_names = secret_variables()
    for environment in ENVIRONMENTS:
        values = chart_values(environment)
        for path, value in walk(values):
            key = str(path[-1]) if path else ""
            if "password" in key.lower() and not isinstance(value, bool):
                assert value in ("", None), path  # e.g. postgresqlPassword, redis.password
            if isinstance(value, str):
                assert not credential.search(value), path
        for variable in environment_variables(values):
            reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if reference:
                assert (reference["name"], reference["key"]) in SECRETS, variable
            if variable["name"] in secret_names:
                assert reference and "value" not in variable, variable


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_code_location_serves_the_projects_definitions_as_non_root(environment: str) -> None:
    values = chart_values(environment)
    code_location = deployment(values)
    args = code_location["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    assert module == "aiplatform_dagster.definitions"
    assert hasattr(importlib.import_module(module), "defs")
    assert code_location["port"] == 3030
    assert code_location["includeConfigInLaunchedRuns"]["enabled"]
    assert code_location["image"]["repository"].endswith("/aiplatform-dagster")
    pod, container = code_location["podSecurityContext"], code_location["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] == RUN_USER
    assert container["allowPrivilegeEscalation"] is False
    assert writable_tmp(code_location["volumes"], code_location["volumeMounts"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_variable_is_a_platform_setting_that_parses(environment: str) -> None:
    """Renaming a setting in config.py without updating the values fails here."""
    values = chart_values(environment)
    variables = environment_variables(values)
    known = {variable.name for variable in describe(load_settings({}))}
    assert {variable["name"] for variable in variables} <= known
    literal = {v["name"]: v["value"] for v in variables if "value" in v}
    settings = load_settings(literal)
    assert settings.execution.executor == "k8s"  # each step its own Job on its profile's pool
    mounts = {mount["name"]: mount["mountPath"] for mount in deployment(values)["volumeMounts"]}
    [storage] = [v for v in deployment(values)["volumes"] if "persistentVolumeClaim" in v]
    assert storage["persistentVolumeClaim"]["claimName"] == STORAGE_CLAIM
    assert str(settings.paths.storage_dir) == mounts[storage["name"]] == STORAGE_PATH
    assert settings.paths.documents_dir.is_relative_to(settings.paths.storage_dir)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_long_running_pod_is_on_the_cpu_pool_within_limits(environment: str) -> None:
    values = chart_values(environment)
    selectors = [value for path, value in walk(values) if path[-1:] == ("nodeSelector",)]
    assert all(set(selector) <= {POOL_LABEL} for selector in selectors), selectors
    pods = long_running_pods(values)
    assert validate_manifests(pods.values()) == []
    for name, pod in pods.items():
        spec, [container] = pod["spec"], pod["spec"]["containers"]
        assert spec["nodeSelector"] == {POOL_LABEL: ComputePool.CPU.value}, name
        resources = container["resources"]
        assert set(resources["limits"]) >= {"cpu", "memory"}, name
        for resource, request in resources["requests"].items():
            assert parse_quantity(request) <= parse_quantity(resources["limits"][resource]), name


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_run_and_step_jobs_built_from_the_values_are_valid_and_share_the_storage(
    environment: str, kubeconfig: Path
) -> None:
    values = chart_values(environment)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = run_launcher(values, kubeconfig)
    jobs = {"run": run_job(values, launcher)}
    jobs |= {profile: step_job(values, launcher, profile) for profile in PROFILES}
    assert validate_manifests(jobs.values()) == []
    for name, job in jobs.items():
        spec, [container] = pod_spec(job), pod_spec(job)["containers"]
        assert job["spec"]["backoffLimit"] == 0, name  # Dagster owns retries
        assert spec["serviceAccountName"] == STEP_SERVICE_ACCOUNT, name
        assert spec["securityContext"]["runAsNonRoot"], name
        assert spec["securityContext"]["runAsUser"] == RUN_USER, name
        assert container["securityContext"]["readOnlyRootFilesystem"], name
        assert writable_tmp(spec["volumes"], container["volumeMounts"]), name
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [STORAGE_CLAIM], name  # once, though launcher and code location add it
        volume_names = [volume["name"] for volume in spec["volumes"]]
        assert len(volume_names) == len(set(volume_names)), name
        storage_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == STORAGE_PATH]
        assert len(storage_mounts) == 1, name
        env = {variable["name"]: variable for variable in container["env"]}
        assert len(env) == len(container["env"]), name  # no variable set twice
        password = env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (password["name"], password["key"]) in SECRETS, name
        assert env["AIPLATFORM_STORAGE_DIR"]["value"] == STORAGE_PATH, name
    run_spec, [run_container] = pod_spec(jobs["run"]), pod_spec(jobs["run"])["containers"]
    assert run_spec["nodeSelector"] == {POOL_LABEL: ComputePool.CPU.value}
    assert set(run_container["resources"]["limits"]) >= {"cpu", "memory"}
    for name, profile in PROFILES.items():
        spec, [container] = pod_spec(jobs[name]), pod_spec(jobs[name])["containers"]
        assert spec["nodeSelector"] == {POOL_LABEL: profile.pool.value}, name
        assert container["resources"] == profile.k8s_config()["container_config"]["resources"]
        assert (spec.get("tolerations") or []) == ([GPU_TAINT] if profile.gpus else []), name


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_code_server_runs_and_steps_reach_mlflow_and_weaviate_as_documented(
    environment: str, kubeconfig: Path
) -> None:
    """The vector backend, Weaviate's and the tracking server's in-cluster addresses, and the
    Weaviate API key from its Secret, in every container that trains, indexes or evaluates: as
    the Weaviate values and the MLflow chart document them (their own tests prove those
    addresses against the Services they name)."""
    values = chart_values(environment)
    launcher = run_launcher(values, kubeconfig)
    jobs = {"run": run_job(values, launcher)}
    jobs |= {profile: step_job(values, launcher, profile) for profile in PROFILES}
    environments = {"code-server": deployment(values)["env"]}
    environments |= {name: pod_spec(job)["containers"][0]["env"] for name, job in jobs.items()}
    for name, env in environments.items():
        assert backend_wiring(env) == documented_backend_wiring(), name


def test_overrides_never_replace_a_list_the_base_defines() -> None:
    """Helm replaces lists whole: an override listing one env variable would drop the rest."""
    base = load_yaml(VALUES_DIR / "values.yaml")
    base_lists = {path for path, value in walk(base) if isinstance(value, list)}
    for environment in ENVIRONMENTS:
        overrides = load_yaml(VALUES_DIR / f"values-{environment}.yaml")
        restated = {
            path
            for path, value in walk(overrides)
            if isinstance(value, list) and path in base_lists
        }
        assert restated <= OVERRIDABLE_LISTS, (environment, restated - OVERRIDABLE_LISTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_webserver_and_daemon_run_the_projects_dagster_release(environment: str) -> None:
    """They read the same instance database as the code location: one Dagster version."""
    values = chart_values(environment)
    dagster_version = importlib.metadata.version("dagster")
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert str(values[component]["image"]["tag"]) == dagster_version, component
