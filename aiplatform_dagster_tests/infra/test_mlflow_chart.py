"""The MLflow tracking server's Helm chart (k8s/charts/aiplatform-mlflow), rendered offline by
Helm's own Go library with each values file and checked against what it runs on: the installed
mlflow's own CLI, host filter and artifact-URI parser, the platform's MLflow settings, and the
database, container and workload identity that terraform/ creates."""

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow.environment_variables
import pytest
from click.testing import CliRunner
from mlflow.cli import cli
from mlflow.server.security_utils import HEALTH_ENDPOINTS, is_allowed_host_header
from mlflow.store.artifact.azure_blob_artifact_repo import AzureBlobArtifactRepository
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy.engine import make_url

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster_tests.infra.charts import MLFLOW as CHART
from aiplatform_dagster_tests.infra.charts import NAMESPACE
from aiplatform_dagster_tests.infra.helm import (
    container,
    merged,
    one,
    pod_spec,
    selects,
)
from aiplatform_dagster_tests.infra.kubernetes import (
    PROJECT_ROOT,
    TERRAFORM_DIR,
    load_hcl,
    terraform_variable_default,
    validate_manifests,
)
from aiplatform_dagster_tests.infra.settings import (
    LIBPQ_VARIABLES,
    documented_settings,
    secret_literals,
)

VALUES_FILES = ["values.yaml", "values-staging.yaml", "values-production.yaml"]
INSTALL_VALUES = CHART.install_values
"""What the README's `helm upgrade --install` passes with --set, from terraform outputs."""

REQUIRED = ["image.registry", "image.tag", "postgresql.host", "artifacts.storageAccount"]


def flag(command: list[str], name: str) -> str:
    """The value that follows ``name`` on a command line."""
    return command[command.index(name) + 1]


def reference(expression: str) -> str:
    """``${azurerm_x.y.id}`` as ``azurerm_x.y.id``."""
    return str(expression).removeprefix("${").removesuffix("}")


def terraform_resources(file: str, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for block in load_hcl(TERRAFORM_DIR / file)["resource"]
        for name, body in block.get(resource_type, {}).items()
    }


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
    manifests = CHART.rendered(values_file)
    kinds = sorted(m["kind"] for m in manifests)
    expected = ["Deployment", "Job", "NetworkPolicy", "Service"]
    if values_file == "values-production.yaml":
        expected.append("PodDisruptionBudget")
    assert kinds == sorted(expected)
    assert validate_manifests(manifests) == []
    assert all(m["metadata"]["namespace"] == NAMESPACE for m in manifests)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_is_clean(values_file: str) -> None:
    assert CHART.lint_problems(values_file) == []


@pytest.mark.parametrize("missing", REQUIRED)
def test_install_time_values_have_no_made_up_defaults(missing: str) -> None:
    """Without one of the terraform outputs the render fails and names the value."""
    section, key = missing.split(".")
    values = merged(INSTALL_VALUES, {section: {key: ""}})
    production = merged(CHART.values_file("values-production.yaml"), values)
    assert f"{missing} is required" in CHART.refusal(production)


def test_a_storage_account_that_cannot_exist_is_refused() -> None:
    account = {"artifacts": {"storageAccount": "St-Aiplatform"}}
    assert "is not a storage account name" in CHART.refusal(merged(INSTALL_VALUES, account))


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_command_is_an_mlflow_server_invocation_the_installed_mlflow_accepts(
    values_file: str,
) -> None:
    manifests = CHART.rendered(values_file)
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
    manifests = CHART.rendered(values_file)
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
    manifests = CHART.rendered(values_file)
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


AZURE_BLOB_STORE_MODULES = {
    "azure.storage.blob": "azure-storage-blob",
    "azure.identity": "azure-identity",
}
"""What mlflow's wasbs:// store imports (without an account key), and the distribution of each."""


def test_the_project_requires_what_the_blob_artifact_store_imports() -> None:
    """The image installs the project with its dependencies, so the server's image has mlflow's
    wasbs:// store only if pyproject.toml names the libraries it imports (mlflow does not)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    required = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    for module, distribution in AZURE_BLOB_STORE_MODULES.items():
        assert distribution in required, f"pyproject.toml does not require {distribution}"
        files = {str(path) for path in importlib.metadata.distribution(distribution).files or []}
        assert f"{module.replace('.', '/')}/__init__.py" in files, (distribution, module)


WORKLOAD_IDENTITY_ENV = {
    "AZURE_CLIENT_ID": "22222222-3333-4444-5555-666666666666",
    "AZURE_TENANT_ID": "33333333-4444-5555-6666-777777777777",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
}
"""What Azure's workload identity webhook injects into a pod labelled
``azure.workload.identity/use: "true"``, besides AZURE_FEDERATED_TOKEN_FILE."""


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_installed_mlflow_opens_the_artifacts_destination_as_the_workload_identity(
    values_file: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None
) -> None:
    """`mlflow server --serve-artifacts` opens --artifacts-destination through its own handler,
    whose wasbs:// store imports azure-storage-blob and, with no account key, azure-identity's
    DefaultAzureCredential: both must be installed with the project, which the image installs.
    Nothing connects before the first upload, so this runs offline (any connection fails it)."""
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, handlers

    destination = flag(container(CHART.rendered(values_file))["command"], "--artifacts-destination")
    token = tmp_path / "azure-identity-token"
    token.write_text("header.payload.signature")
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)  # the terraform account allows no shared keys
    for name, value in {**WORKLOAD_IDENTITY_ENV, "AZURE_FEDERATED_TOKEN_FILE": str(token)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV_VAR, destination)
    monkeypatch.setattr(handlers, "_artifact_repo", None)  # the server's cached store

    repository = handlers._get_artifact_repo_mlflow_artifacts()
    assert isinstance(repository, AzureBlobArtifactRepository)
    assert repository.artifact_uri == destination
    _, account, _, suffix = AzureBlobArtifactRepository.parse_wasbs_uri(destination)
    assert repository.client.url == f"https://{account}.{suffix}/"
    credential = repository.client.credential
    assert isinstance(credential, DefaultAzureCredential)
    assert any(isinstance(c, WorkloadIdentityCredential) for c in credential.credentials)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_probes_hit_health_on_the_server_port_which_the_service_exposes(
    values_file: str,
) -> None:
    manifests = CHART.rendered(values_file)
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
    documented = documented_settings(CHART.path / "values.yaml")
    mlflow_settings = {v.name for v in describe(load_settings({})) if v.section == "mlflow"}
    assert documented.keys() <= mlflow_settings
    assert {"AIPLATFORM_MLFLOW_TRACKING_URI", "AIPLATFORM_MLFLOW_ARTIFACT_ROOT"} <= set(documented)
    settings = load_settings(documented).mlflow
    # An mlflow-artifacts URI: the platform's experiment then stores through the server's proxy.
    assert urlsplit(settings.artifact_root).scheme == "mlflow-artifacts"

    manifests = CHART.rendered("values-production.yaml")
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
    names = [e["name"] for e in container(CHART.rendered(values_file))["env"]]
    assert len(names) == len(set(names))
    assert set(names) - LIBPQ_VARIABLES <= known


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_pods_run_locked_down_on_the_cpu_pool(values_file: str) -> None:
    manifests = CHART.rendered(values_file)
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
    job = one(CHART.rendered("values-production.yaml"), "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_production_keeps_a_server_up_through_drains() -> None:
    manifests = CHART.rendered("values-production.yaml")
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
    manifests = CHART.rendered("values-staging.yaml")
    assert one(manifests, "Deployment")["spec"]["replicas"] == 1
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_files_hold_no_secret_values(values_file: str) -> None:
    assert secret_literals(CHART.values_file(values_file)) == []
    assert not [m for m in CHART.rendered(values_file) if m["kind"] == "Secret"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_network_policy_admits_only_the_platforms_namespace(values_file: str) -> None:
    manifests = CHART.rendered(values_file)
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
