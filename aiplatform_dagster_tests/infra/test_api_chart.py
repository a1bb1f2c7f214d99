"""The serving API's Helm chart (k8s/charts/aiplatform-api), rendered offline by Helm's own Go
library (helm-python-sdk) with each values file, then checked the way a platform engineer
reviews it: valid at the cluster's Kubernetes version, wired to the routes and settings the
API really has, secure, and able to survive a node drain in production."""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster_tests.infra.charts import API as CHART
from aiplatform_dagster_tests.infra.charts import (
    MLFLOW,
    NAMESPACE,
    WEAVIATE_CLIENT_SERVICE,
    backend_wiring,
    documented_backend_wiring,
)
from aiplatform_dagster_tests.infra.helm import (
    container,
    merged,
    one,
    selects,
)
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT, validate_manifests
from aiplatform_dagster_tests.infra.settings import (
    LIBPQ_VARIABLES,
    plain_env,
    secret_literals,
    secret_variables,
)

ALERTS = PROJECT_ROOT / "k8s" / "monitoring" / "alerts.yaml"
VALUES_FILES = ["values.yaml", "values-staging.yaml", "values-production.yaml"]
INSTALL_VALUES = CHART.install_values
"""What the README's `helm upgrade --install` passes with --set (no defaults on purpose)."""

PRIVATE_ROUTES = {"/metrics", "/healthz", "/readyz"}


def port_number(api: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's port, a name resolved against the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in api["ports"] if p["name"] == port]
    return number


def egress_ports_to(policy: Mapping[str, Any], labels: Mapping[str, str]) -> set[int]:
    """The TCP ports on which ``policy`` lets its pods reach a pod of the namespace that has
    ``labels`` (a rule without ``to`` reaches every address on its ports)."""

    def reaches(peer: Mapping[str, Any]) -> bool:
        namespace = peer.get("namespaceSelector")
        in_namespace = namespace is None or selects(
            namespace, {"kubernetes.io/metadata.name": NAMESPACE}
        )
        pods = peer.get("podSelector")
        return "ipBlock" not in peer and in_namespace and (pods is None or selects(pods, labels))

    return {
        port["port"]
        for rule in policy["egress"]
        if not rule.get("to") or any(reaches(peer) for peer in rule["to"])
        for port in rule["ports"]
        if port.get("protocol", "TCP") == "TCP"
    }


@pytest.fixture(scope="module")
def app_routes() -> set[str]:
    return {route.path for route in create_app(load_settings({})).routes}


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_renders_valid_manifests_at_the_cluster_version(values_file: str) -> None:
    manifests = CHART.rendered(values_file)
    kinds = sorted(m["kind"] for m in manifests)
    migration = ["Job"] if values_file != "values.yaml" else []  # with PostgreSQL: agent store
    assert kinds == sorted(
        [
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            *migration,
        ]
    )
    assert validate_manifests(manifests) == []
    assert all(m["metadata"]["namespace"] == NAMESPACE for m in manifests)
    assert not [m for m in manifests if m["kind"] == "Secret"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_is_clean(values_file: str) -> None:
    assert CHART.lint_problems(values_file) == []


def test_install_time_values_have_no_made_up_defaults() -> None:
    """Without the registry, tag, identity, host or database the render fails and says which."""
    for missing in INSTALL_VALUES:
        values = {k: v for k, v in INSTALL_VALUES.items() if k != missing}
        staging = merged(CHART.values_file("values-staging.yaml"), values)
        assert re.search(rf"{missing}\.\w+ is required", CHART.refusal(staging))


def test_production_keeps_two_pods_through_drains_and_scales_from_three() -> None:
    manifests = CHART.rendered("values-production.yaml")
    deployment = one(manifests, "Deployment")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    pdb = one(manifests, "PodDisruptionBudget")

    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    # The autoscaler owns the count: a Deployment replicas field would reset it on upgrade.
    assert deployment["spec"].get("replicas", hpa["spec"]["minReplicas"]) >= 3

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"], pod_labels)
    spec = pdb["spec"]
    kept = spec.get("minAvailable", hpa["spec"]["minReplicas"] - spec.get("maxUnavailable", 0))
    assert isinstance(kept, int) and kept >= 2


def test_staging_runs_one_or_two_pods_and_never_blocks_a_drain() -> None:
    manifests = CHART.rendered("values-staging.yaml")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= 2
    assert "replicas" not in one(manifests, "Deployment")["spec"]
    assert one(manifests, "PodDisruptionBudget")["spec"].get("maxUnavailable", 0) >= 1


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_probes_hit_the_apis_health_routes_on_its_port(
    values_file: str, app_routes: set[str]
) -> None:
    api = container(CHART.rendered(values_file))
    assert api["command"] == ["aiplatform", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert port_number(api, "http") == 8000
    probes = {kind: api[f"{kind}Probe"]["httpGet"] for kind in ["startup", "liveness", "readiness"]}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startup": "/healthz",
        "liveness": "/healthz",
        "readiness": "/readyz",
    }
    assert all(port_number(api, probe["port"]) == 8000 for probe in probes.values())
    assert {"/healthz", "/readyz"} <= app_routes
    startup = api["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300, "too little for models"
    assert {"cpu", "memory"} <= api["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= api["resources"]["limits"].keys()


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_pods_run_locked_down_on_the_cpu_pool_with_the_shared_storage(values_file: str) -> None:
    manifests = CHART.rendered(values_file)
    pod = one(manifests, "Deployment")["spec"]["template"]
    api = container(manifests)
    context = api["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in api["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    storage = mounts["/var/lib/aiplatform/storage"]["persistentVolumeClaim"]
    assert storage["claimName"] == "aiplatform-storage"
    assert plain_env(api)["AIPLATFORM_STORAGE_DIR"] == "/var/lib/aiplatform/storage"

    assert pod["spec"]["nodeSelector"] == {"aiplatform/pool": "cpu"}
    spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    assert spread.keys() == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert selects(constraint["labelSelector"], pod["metadata"]["labels"])

    account = one(manifests, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"] == "aiplatform-api"
    assert account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_env_names_are_the_platforms_settings(values_file: str) -> None:
    """A renamed or misspelt setting would be silently ignored by the API: fail here instead."""
    api = container(CHART.rendered(values_file))
    names = [e["name"] for e in api["env"]]
    settings_names = {v.name for v in describe(load_settings({}))}
    assert len(names) == len(set(names)), "a variable is set twice"
    assert set(names) - settings_names - LIBPQ_VARIABLES == set()
    load_settings(plain_env(api))  # every plain value parses as the API will parse it


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_api_reaches_mlflow_and_weaviate_as_their_charts_document(values_file: str) -> None:
    """The vector backend, Weaviate's and the tracking server's in-cluster addresses, and the
    Weaviate API key from its Secret, as the Weaviate values and the MLflow chart document them
    (their own tests prove those addresses against the Services they name)."""
    api = container(CHART.rendered(values_file))
    assert backend_wiring(api["env"]) == documented_backend_wiring()


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_secrets_come_from_secret_references_only(values_file: str) -> None:
    api = container(CHART.rendered(values_file))
    secret_names = secret_variables() | LIBPQ_VARIABLES
    for variable in api["env"]:
        if "valueFrom" in variable:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"].startswith("aiplatform-") and reference["key"]
            continue
        value = variable["value"]
        assert urlsplit(value).password is None, f"{variable['name']} carries a password"
        if variable["name"] in secret_names:  # a DSN with its password left to PGPASSWORD
            assert variable["name"].endswith("_DSN"), f"{variable['name']} must be a secretKeyRef"
    by_name = {e["name"]: e for e in api["env"]}
    assert by_name["AIPLATFORM_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "aiplatform-redis",
        "key": "url",
    }
    assert by_name["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "aiplatform-llm",
        "key": "api-key",
    }


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_files_hold_no_secret_values(values_file: str) -> None:
    assert secret_literals(CHART.values_file(values_file)) == []


def test_a_secret_given_as_a_plain_setting_is_refused() -> None:
    settings = {"settings": {"OPENAI_API_KEY": "not-a-real-key"}}
    assert "holds a secret" in CHART.refusal(merged(INSTALL_VALUES, settings))


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_ingress_is_sticky_tls_and_exposes_only_the_api(
    values_file: str, app_routes: set[str]
) -> None:
    manifests = CHART.rendered(values_file)
    ingress = one(manifests, "Ingress")
    service = one(manifests, "Service")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-name"]
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-secure"] == "true"

    (tls,) = ingress["spec"]["tls"]
    values = merged(CHART.values_file("values.yaml"), CHART.values_file(values_file))
    assert tls["secretName"] == values["ingress"]["tls"]["secretName"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == set(tls["hosts"]) == {INSTALL_VALUES["ingress"]["host"]}

    # NGINX refuses bodies the API would refuse anyway, at the same size.
    api = container(manifests)
    body_limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert re.fullmatch(r"\d+", body_limit)
    assert load_settings(plain_env(api)).serving.max_body_bytes == int(body_limit)

    service_ports = {p["name"] for p in service["spec"]["ports"]}
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in service_ports
        assert any(route.startswith(path["path"]) for route in app_routes - PRIVATE_ROUTES)
        assert not any(route.startswith(path["path"]) for route in PRIVATE_ROUTES)


def test_prometheus_scrapes_every_replica_as_the_job_the_alerts_use() -> None:
    manifests = CHART.rendered("values-production.yaml")
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert set(re.findall(r'job="([^"]+)"', ALERTS.read_text())) == {job}


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_network_policy_admits_only_the_ingress_controller_and_prometheus(
    values_file: str,
) -> None:
    manifests = CHART.rendered(values_file)
    policy = one(manifests, "NetworkPolicy")["spec"]
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"], pod_labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8000]
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}

    assert all(egress.get("ports") for egress in policy["egress"]), "an egress rule allows all"
    egress_ports = {(p["port"], p["protocol"]) for e in policy["egress"] for p in e["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (443, "TCP")} <= egress_ports
    assert egress_ports & {(6379, "TCP"), (6380, "TCP")}

    # In-cluster backends, on their pods' ports only, and to no other pod on those ports.
    mlflow = MLFLOW.rendered(values_file)
    mlflow_ports = {p["containerPort"] for p in container(mlflow)["ports"]}
    weaviate = yaml.safe_load(WEAVIATE_CLIENT_SERVICE.read_text())["spec"]
    weaviate_ports = {p["targetPort"] for p in weaviate["ports"]}
    assert mlflow_ports == {5000} and weaviate_ports == {8080, 50051}
    assert mlflow_ports <= egress_ports_to(policy, one(mlflow, "Service")["spec"]["selector"])
    assert weaviate_ports <= egress_ports_to(policy, weaviate["selector"])
    assert not egress_ports_to(policy, {"app": "other"}) & (mlflow_ports | weaviate_ports)


@pytest.mark.parametrize("values_file", ["values-staging.yaml", "values-production.yaml"])
def test_the_agent_store_is_migrated_once_before_new_pods_start(values_file: str) -> None:
    """README: run the agent store's migration once per release before agents run. A Helm
    pre-install/pre-upgrade hook does it with the release's image and the API's database."""
    manifests = CHART.rendered(values_file)
    job = one(manifests, "Job")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert hooks == ["pre-install", "pre-upgrade"]
    migration, api = container(manifests, "Job"), container(manifests)
    assert migration["command"] == ["aiplatform", "agent", "migrate"]
    assert migration["image"] == api["image"]  # the code that will serve
    env = {e["name"]: e for e in migration["env"]}
    api_env = {e["name"]: e for e in api["env"]}
    for name in ("AIPLATFORM_AGENTS_CHECKPOINT_DSN", "PGPASSWORD"):
        assert env[name] == api_env[name], name  # the same database, the password by reference
    labels = job["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):  # no traffic and no drain budget for it
        selector = one(manifests, kind)["spec"]["selector"]
        assert not selects(selector if kind != "Service" else {"matchLabels": selector}, labels)
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
