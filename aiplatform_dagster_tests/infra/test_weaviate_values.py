"""Weaviate from the official chart (k8s/weaviate/): our values against the chart's own keys,
then the chart itself (a pinned copy, weaviate_chart/) rendered offline with them by Helm's Go
library, checked as a platform engineer would: a server new enough for the platform's collection
aliases, API keys from a Secret only, persistent, replicated in production, locked down, and
reachable by the platform on the URL the values document, for HTTP and gRPC alike."""

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster.rag.index.weaviate_store import MINIMUM_VERSION, WeaviateEndpoint
from aiplatform_dagster_tests.infra.helm import merged, one, render_chart
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT, validate_manifests
from aiplatform_dagster_tests.infra.settings import documented_settings

CHART = Path(__file__).parent / "weaviate_chart" / "weaviate"
VALUES = PROJECT_ROOT / "k8s" / "weaviate"
CLIENT_SERVICE = VALUES / "client-service.yaml"
NAMESPACE = "aiplatform"
ENVIRONMENTS = {
    "staging": ["values.yaml"],
    "production": ["values.yaml", "values-production.yaml"],
}
"""The -f files of each environment's `helm upgrade --install`, in order."""

KUBERNETES_SUBTREES = {
    "resources",
    "securityContext",
    "containerSecurityContext",
    "affinity",
    "nodeSelector",
    "extraVolumes",
    "extraVolumeMounts",
    "podDisruptionBudgets.weaviate.spec",
}
"""Values the chart copies whole into the manifests: their fields are Kubernetes' and are
checked by the strict validation of the render."""

CONFIG_FILE_SUBTREES = {"authentication", "authorization"}
"""Values the chart copies whole into Weaviate's conf.yaml."""

ENVIRONMENT_MAPS = {"env", "envSecrets", "backups.azure.envconfig", "backups.azure.envSecrets"}
"""Values whose keys are Weaviate's environment variables."""

DOCUMENTED_ELSEWHERE = {
    "REPLICATION_MINIMUM_FACTOR": "https://docs.weaviate.io/deploy/configuration/replication",
    "DISABLE_TELEMETRY": "https://docs.weaviate.io/deploy/configuration/telemetry",
    "API_BASED_MODULES_DISABLED": "https://docs.weaviate.io/deploy/configuration/env-vars",
}
"""Weaviate variables the chart's files never mention, with the page that documents each."""

NOT_SECRET = {"AUTHENTICATION_APIKEY_ENABLED", "AUTHENTICATION_APIKEY_USERS"}
"""Variables named like secrets that hold none: a switch and the keys' user name."""


def values_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES / name).read_text()) or {}


def environment_values(environment: str) -> dict[str, Any]:
    return merged(*(values_file(name) for name in ENVIRONMENTS[environment]))


def render(values: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    return tuple(render_chart(CHART, values, "weaviate", NAMESPACE))


@cache
def rendered(environment: str) -> tuple[dict[str, Any], ...]:
    return render(environment_values(environment))


@cache
def upstream_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@cache
def upstream_text() -> str:
    """Every file of the chart, comments included: where it documents what it passes on."""
    files = [CHART / "values.yaml", *sorted((CHART / "templates").iterdir())]
    return "\n".join(path.read_text() for path in files)


def client_service() -> dict[str, Any]:
    return yaml.safe_load(CLIENT_SERVICE.read_text())


def weaviate_container(manifests: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (only,) = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return only


def env(manifests: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    variables = weaviate_container(manifests)["env"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names)), "a variable is set twice"
    return {v["name"]: v for v in variables}


def quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity (4Gi) or a Go memory limit (3GiB)."""
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?B?", str(text)).groups()
    return int(number) * 1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(unit or "")


def key_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, Mapping):
            yield from key_paths(value, f"{path}.")


def chart_has(path: str) -> bool:
    """Whether the chart's default values.yaml has the dotted key path."""
    upstream: Any = upstream_defaults()
    for key in path.split("."):
        if not isinstance(upstream, Mapping) or key not in upstream:
            return False
        upstream = upstream[key]
    return True


def documented_key(key: str) -> bool:
    """Whether the chart documents ``key:`` (as a key or in a commented-out example)."""
    return re.search(rf"^\s*(# *)?{re.escape(key)}:", upstream_text(), re.M) is not None


def documented_variable(name: str) -> bool:
    return bool(re.search(rf"\b{re.escape(name)}\b", upstream_text())) or (
        name in DOCUMENTED_ELSEWHERE
    )


@pytest.mark.parametrize("name", ["values.yaml", "values-production.yaml"])
def test_every_key_is_one_the_chart_has(name: str) -> None:
    """Helm silently ignores a key the chart does not read: a misspelt one would be lost."""
    passed_through = KUBERNETES_SUBTREES | CONFIG_FILE_SUBTREES | ENVIRONMENT_MAPS
    for path, _ in key_paths(values_file(name)):
        parent, _, key = path.rpartition(".")
        within = [p for p in passed_through if parent == p or parent.startswith(f"{p}.")]
        if not within:
            assert chart_has(path), f"{name}: {path} is not a key of the chart's values.yaml"
        elif within[0] in ENVIRONMENT_MAPS:
            assert documented_variable(key), f"{name}: {path} is no Weaviate variable we know"
        elif within[0] in CONFIG_FILE_SUBTREES:
            assert chart_has(path) or documented_key(key), f"{name}: {path} is no config key"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_renders_valid_manifests_at_the_cluster_version(environment: str) -> None:
    manifests = rendered(environment)
    assert validate_manifests([*manifests, client_service()]) == []
    services = [m for m in manifests if m["kind"] == "Service"] + [client_service()]
    assert {s["spec"].get("type", "ClusterIP") for s in services} == {"ClusterIP"}, "exposed"
    assert not [m for m in manifests if m["kind"] == "Deployment"], "a module is deployed"


def test_the_server_is_pinned_to_a_version_with_collection_aliases() -> None:
    tag = values_file("values.yaml")["image"]["tag"]  # pinned here, not the chart's default
    version = tuple(int(part) for part in re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", tag).groups())
    assert version[:2] >= MINIMUM_VERSION >= (1, 32)
    for environment in ENVIRONMENTS:
        image = weaviate_container(rendered(environment))["image"]
        assert image == f"cr.weaviate.io/semitechnologies/weaviate:{tag}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_request_needs_an_api_key_from_the_secret(environment: str) -> None:
    manifests = rendered(environment)
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["conf.yaml"])
    variables = env(manifests)
    assert config["authentication"]["anonymous_access"]["enabled"] is False
    assert "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED" not in variables  # would override the file
    assert "apikey" not in config["authentication"], "API keys in a ConfigMap"
    assert variables["AUTHENTICATION_APIKEY_ENABLED"]["value"] == "true"
    assert variables["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "aiplatform-weaviate",
        "key": "AUTHENTICATION_APIKEY_ALLOWED_KEYS",
    }
    # The keys' user may create and drop collections and move aliases.
    users = set(variables["AUTHENTICATION_APIKEY_USERS"]["value"].split(","))
    assert config["authorization"]["rbac"]["enabled"] is True
    assert users <= set(config["authorization"]["rbac"]["root_users"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_secret_is_written_in_our_files(environment: str) -> None:
    manifests = rendered(environment)
    for name, variable in env(manifests).items():
        secret = re.search(r"KEY|PASSWORD|SECRET|TOKEN|CONNECTION_STRING", name)
        if secret and name not in NOT_SECRET:
            assert "valueFrom" in variable, f"{name} is a plain value"
    # The chart's only Secret is the one it generates for its nodes (random, never in a file).
    secrets = [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"]
    assert secrets == ["weaviate-cluster-api-basic-auth"]
    for path, value in key_paths(environment_values(environment)):
        if isinstance(value, str):
            assert not re.search(r"-----BEGIN|AccountKey=|[?&]sig=|://[^/\s]*:[^/\s]*@", value)
        assert not (path.endswith(".secrets") and value), f"{path}: plain text the chart stores"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_data_persists_on_premium_managed_disks(environment: str) -> None:
    manifests = rendered(environment)
    statefulset = one(manifests, "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "managed-csi-premium"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= quantity("32Gi")
    mounts = {m["name"]: m["mountPath"] for m in weaviate_container(manifests)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env(manifests)["PERSISTENCE_DATA_PATH"]["value"]


def test_production_keeps_every_collection_through_the_loss_of_a_node() -> None:
    manifests = rendered("production")
    statefulset = one(manifests, "StatefulSet")
    variables = env(manifests)
    replicas = statefulset["spec"]["replicas"]
    factor = int(variables["REPLICATION_MINIMUM_FACTOR"]["value"])
    assert replicas >= 3
    assert 3 <= factor <= replicas
    assert int(variables["RAFT_BOOTSTRAP_EXPECT"]["value"]) % 2 == 1  # a Raft quorum exists

    budget = one(manifests, "PodDisruptionBudget")["spec"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("minAvailable" in budget) != ("maxUnavailable" in budget)
    kept = budget.get("minAvailable", replicas - budget.get("maxUnavailable", 0))
    assert isinstance(kept, int) and factor // 2 + 1 <= kept < replicas  # quorum, yet drainable

    anti = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    [required] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["topologyKey"] == "kubernetes.io/hostname"
    assert required["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_staging_is_one_node_and_never_blocks_a_drain() -> None:
    manifests = rendered("staging")
    assert one(manifests, "StatefulSet")["spec"]["replicas"] == 1
    assert env(manifests)["REPLICATION_MINIMUM_FACTOR"]["value"] == "1"
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pods_run_locked_down_on_the_cpu_pool(environment: str) -> None:
    manifests = rendered(environment)
    spec = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    weaviate = weaviate_container(manifests)
    context = weaviate["securityContext"]
    assert spec["nodeSelector"] == {"aiplatform/pool": "cpu"}
    assert "initContainers" not in spec, "the chart's privileged sysctl container runs"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tmp,) = [m for m in weaviate["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]

    resources = weaviate["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    # Go collects garbage before the kernel kills the pod for memory.
    go_limit = quantity(env(manifests)["GOMEMLIMIT"]["value"])
    assert go_limit < quantity(resources["limits"]["memory"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_model_modules_the_platform_brings_its_own_vectors(environment: str) -> None:
    variables = env(rendered(environment))
    assert variables["DEFAULT_VECTORIZER_MODULE"]["value"] == "none"
    assert "ENABLE_MODULES" not in variables
    assert variables["API_BASED_MODULES_DISABLED"]["value"] == "true"


def test_backups_to_azure_blob_take_their_credentials_from_a_secret() -> None:
    values = merged(environment_values("production"), {"backups": {"azure": {"enabled": True}}})
    manifests = render(values)
    variables = env(manifests)
    assert validate_manifests(manifests) == []
    assert variables["ENABLE_MODULES"]["value"] == "backup-azure"
    assert variables["BACKUP_AZURE_CONTAINER"]["value"]
    reference = variables["AZURE_STORAGE_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"]
    assert reference == {
        "name": "aiplatform-weaviate-backup",
        "key": "AZURE_STORAGE_CONNECTION_STRING",
    }
    assert "AZURE_STORAGE_KEY" not in variables


def test_the_documented_settings_reach_weaviate_over_http_and_grpc() -> None:
    """values.yaml tells the API and Dagster what to set: every Weaviate setting the platform
    reads, and a URL whose host serves the HTTP port and the gRPC port the client will dial."""
    comments = (VALUES / "values.yaml").read_text()
    names = {v.name for v in describe(load_settings({})) if v.section == "weaviate"}
    assert names, "the platform has no Weaviate settings"
    missing = {name for name in names if not re.search(rf"^#\s+{name}\b", comments, re.M)}
    assert not missing, f"not documented: {missing}"
    settings = load_settings(documented_settings(VALUES / "values.yaml")).weaviate
    assert re.search(r"^#\s+WEAVIATE_API_KEY from Secret aiplatform-weaviate\b", comments, re.M)

    endpoint = WeaviateEndpoint.from_url(settings.url, settings.grpc_port)
    service = client_service()
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert service["metadata"]["namespace"] == NAMESPACE
    assert endpoint.http_host == endpoint.grpc_host == fqdn
    assert not endpoint.http_secure

    manifests = rendered("production")
    pod_labels = one(manifests, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    weaviate = weaviate_container(manifests)
    http_port = int(weaviate["args"][weaviate["args"].index("--port") + 1])
    served = {p["containerPort"] for p in weaviate["ports"]}
    assert http_port in served
    targets = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets[endpoint.http_port] == http_port
    assert targets[endpoint.grpc_port] in served - {http_port}
