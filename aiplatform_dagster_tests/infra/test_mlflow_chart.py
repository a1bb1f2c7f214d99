"""The MLflow tracking server's Helm chart (k8s/charts/aiplatform-mlflow), rendered offline by
Helm's own Go library with each values file and checked against what it runs on: the installed
mlflow's own CLI, host filter and artifact-URI parser, the platform's MLflow settings, and the
database, container and workload identity that terraform/ creates."""

import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import mlflow.environment_variables
import pytest
import yaml
from click.testing import CliRunner
from mlflow.cli import cli
from mlflow.server.security_utils import HEALTH_ENDPOINTS, is_allowed_host_header
from mlflow.store.artifact.azure_blob_artifact_repo import AzureBlobArtifactRepository
from sqlalchemy.engine import make_url

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster_tests.infra.helm import merged, render_chart
from aiplatform_dagster_tests.infra.kubernetes import (
    PROJECT_ROOT,
    TERRAFORM_DIR,
    kubernetes_version,
    load_hcl,
    terraform_variable_default,
    validate_manifests,
)

CHART = PROJECT_ROOT / "k8s" / "charts" / "aiplatform-mlflow"
NAMESPACE = "aiplatform"
RELEASE = "aiplatform-mlflow"
VALUES_FILES = ["values.yaml", "values-staging.yaml", "values-production.yaml"]

INSTALL_VALUES = {
    "image": {"registry": "aiplatformacr.azurecr.io", "tag": "3f2c1ab"},
    "postgresql": {"host": "psql-aiplatform-prd.postgres.database.azure.com"},
    "artifacts": {"storageAccount": "staiplatformprdart"},
}
"""What the README's `helm upgrade --install` passes with --set, from terraform outputs."""

REQUIRED = ["image.registry", "image.tag", "postgresql.host", "artifacts.storageAccount"]

LIBPQ_VARIABLES = {"PGPASSWORD"}
"""Read by libpq itself: the password of a DSN that carries none."""


def _values_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text()) or {}


def _render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return render_chart(CHART, values, RELEASE, NAMESPACE)


@cache
def rendered(values_file: str) -> tuple[dict[str, Any], ...]:
    """The manifests `helm upgrade --install -f <values_file> --set ...` would apply."""
    layers = [] if values_file == "values.yaml" else [_values_file(values_file)]
    return tuple(_render(merged(*layers, INSTALL_VALUES)))


def one(manifests: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(manifests: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    return one(manifests, kind)["spec"]["template"]["spec"]


def container(manifests: tuple[dict[str, Any], ...], kind: str = "Deployment") -> dict[str, Any]:
    (only,) = pod_spec(manifests, kind)["containers"]
    return only


def flag(command: list[str], name: str) -> str:
    """The value that follows ``name`` on a command line."""
    return command[command.index(name) + 1]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def reference(expression: str) -> str:
    """``${azurerm_x.y.id}`` as ``azurerm_x.y.id``."""
    return str(expression).removeprefix("${").removesuffix("}")


def terraform_resources(file: str, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for block in load_hcl(TERRAFORM_DIR / file)["resource"]
        for name, body in block.get(resource_type, {}).items()
    }


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from leaves(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from leaves(inner, f"{path}[{index}]")
    else:
        yield path, value


def help_options(*command: str) -> dict[str, bool]:
    """The options ``mlflow COMMAND --help`` lists (the installed mlflow's own click command,
    as ``.venv/bin/mlflow`` runs it), each with whether it takes a value."""
    result = CliRunner().invoke(cli, [*command, "--help"], prog_name="mlflow")
    assert result.exit_code == 0, result.output
    options = {}
    for line in result.output.split("Options:", 1)[1].splitlines():
        match = re.match(r"  (?:-\w, )?(--[a-z][\w-]*)(?: / (--[a-z][\w-]*))?(?: (\S+))?", line)
        if match:
            long, negative, metavar = match.groups()
            options[long] = metavar is not None
            if negative:
                options[negative] = False
    return options


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_renders_valid_manifests_at_the_cluster_version(values_file: str) -> None:
    manifests = rendered(values_file)
    kinds = sorted(m["kind"] for m in manifests)
    expected = ["Deployment", "Job", "NetworkPolicy", "Service"]
    if values_file == "values-production.yaml":
        expected.append("PodDisruptionBudget")
    assert kinds == sorted(expected)
    assert validate_manifests(manifests) == []
    assert all(m["metadata"]["namespace"] == NAMESPACE for m in manifests)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_is_clean(values_file: str) -> None:
    layers = [] if values_file == "values.yaml" else [_values_file(values_file)]
    report = helm.lint(
        CHART,
        merged(*layers, INSTALL_VALUES),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{kubernetes_version()}.0",
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("missing", REQUIRED)
def test_install_time_values_have_no_made_up_defaults(missing: str) -> None:
    """Without one of the terraform outputs the render fails and names the value."""
    section, key = missing.split(".")
    values = merged(INSTALL_VALUES, {section: {key: ""}})
    with pytest.raises(helm.HelmRenderError, match=rf"{re.escape(missing)} is required"):
        _render(merged(_values_file("values-production.yaml"), values))


def test_a_storage_account_that_cannot_exist_is_refused() -> None:
    values = merged(INSTALL_VALUES, {"artifacts": {"storageAccount": "St-Aiplatform"}})
    with pytest.raises(helm.HelmRenderError, match="is not a storage account name"):
        _render(values)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_command_is_an_mlflow_server_invocation_the_installed_mlflow_accepts(
    values_file: str,
) -> None:
    manifests = rendered(values_file)
    server = container(manifests)
    command = server["command"]
    assert command[:2] == ["mlflow", "server"]
    options = help_options("server")
    arguments = iter(command[2:])
    given = []
    for argument in arguments:
        assert argument in options, f"mlflow server has no option {argument}"
        given.append(argument)
        if options[argument]:
            value = next(arguments, None)
            assert value is not None and not value.startswith("--"), f"{argument} needs a value"
    assert len(given) == len(set(given)), "an option is given twice"
    assert {"--backend-store-uri", "--serve-artifacts", "--artifacts-destination"} <= set(given)
    assert flag(command, "--host") == "0.0.0.0"
    (port,) = server["ports"]
    assert int(flag(command, "--port")) == port["containerPort"] == 5000

    # The migration Job runs `mlflow db upgrade URL` on the very store the server opens.
    migration = container(manifests, "Job")
    assert migration["command"][:3] == ["mlflow", "db", "upgrade"]
    assert migration["command"][3:] == [flag(command, "--backend-store-uri")]
    usage = CliRunner().invoke(cli, ["db", "upgrade", "--help"], prog_name="mlflow").output
    assert "Usage: mlflow db upgrade [OPTIONS] URL\n" in usage


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_backend_store_is_the_terraform_server_over_psycopg2_without_a_password(
    values_file: str,
) -> None:
    manifests = rendered(values_file)
    uri = flag(container(manifests)["command"], "--backend-store-uri")
    url = make_url(uri)
    # SQLAlchemy 2 maps a bare postgresql:// to psycopg 3; libpq via psycopg2 reads PGPASSWORD.
    assert url.drivername == "postgresql+psycopg2"
    assert url.get_dialect().import_dbapi().__name__ == "psycopg2"  # and it is installed
    assert url.password is None and urlsplit(uri).password is None
    assert url.host == INSTALL_VALUES["postgresql"]["host"]
    assert url.username == terraform_variable_default("postgres_administrator_login")
    assert url.query["sslmode"] == "require"
    assert url.database == "mlflow"
    for kind in ["Deployment", "Job"]:
        env = {e["name"]: e for e in container(manifests, kind)["env"]}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "aiplatform-postgres",
            "key": "postgresql-password",
        }


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_artifacts_go_to_the_terraform_container_with_the_dagster_workload_identity(
    values_file: str,
) -> None:
    """The server proxies every artifact to the blob container terraform creates, as the
    identity terraform federates with the pod's service account and lets write there."""
    manifests = rendered(values_file)
    destination = flag(container(manifests)["command"], "--artifacts-destination")
    container_name, account, path, suffix = AzureBlobArtifactRepository.parse_wasbs_uri(destination)
    [blob_container] = terraform_resources("storage.tf", "azurerm_storage_container").values()
    assert container_name == blob_container["name"] == "artifacts"
    assert account == INSTALL_VALUES["artifacts"]["storageAccount"]
    assert suffix == "blob.core.windows.net" and path == "mlflow"

    pod = one(manifests, "Deployment")["spec"]["template"]
    account_name = pod["spec"]["serviceAccountName"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    subject = f"system:serviceaccount:{NAMESPACE}:{account_name}"
    [identity] = [
        reference(credential["parent_id"]).removesuffix(".id")
        for credential in terraform_resources(
            "identity.tf", "azurerm_federated_identity_credential"
        ).values()
        if credential["subject"] == subject
    ]
    grants = {
        (grant["role_definition_name"], reference(grant["scope"]))
        for grant in terraform_resources("identity.tf", "azurerm_role_assignment").values()
        if reference(grant["principal_id"]) == f"{identity}.principal_id"
    }
    assert ("Storage Blob Data Contributor", "azurerm_storage_container.artifacts.id") in grants
    # The migration needs no Azure identity and gets none.
    job_pod = one(manifests, "Job")["spec"]["template"]
    assert "azure.workload.identity/use" not in job_pod["metadata"]["labels"]
    assert "serviceAccountName" not in job_pod["spec"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_probes_hit_health_on_the_server_port_which_the_service_exposes(
    values_file: str,
) -> None:
    manifests = rendered(values_file)
    server = container(manifests)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    for kind in ["startup", "liveness", "readiness"]:
        probe = server[f"{kind}Probe"]["httpGet"]
        assert probe["path"] == "/health"
        assert ports.get(probe["port"], probe["port"]) == int(flag(server["command"], "--port"))
    # Kubelet probes the pod IP: /health must be exempt from MLflow's Host-header filter.
    assert "/health" in HEALTH_ENDPOINTS
    service = one(manifests, "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 5000 and ports[port["targetPort"]] == 5000
    assert service["spec"]["type"] == "ClusterIP"
    deployment = one(manifests, "Deployment")["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert selects(deployment["selector"], pod_labels)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # The migration Job's pod must never receive the Service's traffic.
    job_labels = one(manifests, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()


def test_the_documented_tracking_uri_reaches_the_service_and_passes_the_host_filter() -> None:
    """What values.yaml tells the platform to set: real settings, naming this Service, with a
    Host header the server accepts (MLflow answers 403 to any host it was not given)."""
    comments = (CHART / "values.yaml").read_text()
    documented = dict(re.findall(r"^#\s+(AIPLATFORM_MLFLOW_\w+)=(\S+)$", comments, re.M))
    mlflow_settings = {v.name for v in describe(load_settings({})) if v.section == "mlflow"}
    assert documented.keys() <= mlflow_settings
    assert {"AIPLATFORM_MLFLOW_TRACKING_URI", "AIPLATFORM_MLFLOW_ARTIFACT_ROOT"} <= set(documented)
    settings = load_settings(documented).mlflow
    # An mlflow-artifacts URI: the platform's experiment then stores through the server's proxy.
    assert urlsplit(settings.artifact_root).scheme == "mlflow-artifacts"

    manifests = rendered("values-production.yaml")
    service = one(manifests, "Service")
    tracking = urlsplit(settings.tracking_uri)
    assert tracking.hostname == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert tracking.port == service["spec"]["ports"][0]["port"]

    allowed = flag(container(manifests)["command"], "--allowed-hosts").split(",")
    assert "*" not in allowed
    for host in [tracking.netloc, f"{service['metadata']['name']}:5000", "localhost:5000"]:
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "mlflow.attacker.example")


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_env_names_are_mlflows_own_variables(values_file: str) -> None:
    """A misspelt MLflow variable would be ignored silently."""
    known = {
        variable.name
        for variable in vars(mlflow.environment_variables).values()
        if isinstance(variable, mlflow.environment_variables._EnvironmentVariable)
    }
    names = [e["name"] for e in container(rendered(values_file))["env"]]
    assert len(names) == len(set(names))
    assert set(names) - LIBPQ_VARIABLES <= known


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_pods_run_locked_down_on_the_cpu_pool(values_file: str) -> None:
    manifests = rendered(values_file)
    for kind in ["Deployment", "Job"]:
        spec = pod_spec(manifests, kind)
        (only,) = spec["containers"]
        context = only["securityContext"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in only["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"]
        assert spec["nodeSelector"] == {"aiplatform/pool": "cpu"}
        assert {"cpu", "memory"} <= only["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= only["resources"]["limits"].keys()
        assert only["image"] == "aiplatformacr.azurecr.io/aiplatform-dagster:3f2c1ab"


def test_the_schema_is_migrated_once_before_servers_start() -> None:
    job = one(rendered("values-production.yaml"), "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_production_keeps_a_server_up_through_drains() -> None:
    manifests = rendered("values-production.yaml")
    deployment = one(manifests, "Deployment")
    pdb = one(manifests, "PodDisruptionBudget")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    assert 1 <= pdb["spec"]["minAvailable"] < replicas
    assert selects(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"


def test_staging_runs_one_server_and_never_blocks_a_drain() -> None:
    manifests = rendered("values-staging.yaml")
    assert one(manifests, "Deployment")["spec"]["replicas"] == 1
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_files_hold_no_secret_values(values_file: str) -> None:
    for path, value in leaves(_values_file(values_file)):
        if not isinstance(value, str):
            continue
        assert urlsplit(value).password is None, f"{path} is a URL with a password"
        assert not re.search(r"AccountKey=|SharedAccessSignature=|[?&]sig=", value), path
        assert "-----BEGIN" not in value, f"{path} holds a key or certificate"
    assert not [m for m in rendered(values_file) if m["kind"] == "Secret"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_network_policy_admits_only_the_platforms_namespace(values_file: str) -> None:
    manifests = rendered(values_file)
    policy = one(manifests, "NetworkPolicy")["spec"]
    for kind in ["Deployment", "Job"]:
        labels = one(manifests, kind)["spec"]["template"]["metadata"]["labels"]
        assert selects(policy["podSelector"], labels), f"{kind} pods are not covered"
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    (rule,) = policy["ingress"]
    assert [(p["port"], p["protocol"]) for p in rule["ports"]] == [(5000, "TCP")]
    (source,) = rule["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}

    assert all(egress.get("ports") for egress in policy["egress"]), "an egress rule allows all"
    egress_ports = {(p["port"], p["protocol"]) for e in policy["egress"] for p in e["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (443, "TCP")} <= egress_ports
