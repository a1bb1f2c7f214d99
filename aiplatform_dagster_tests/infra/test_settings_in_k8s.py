"""Every platform setting that k8s/ names or sets is one aiplatform_dagster/config.py reads
(introspected from its settings classes), so that a misspelt or renamed variable, which the
platform would silently ignore, never ships; and the API reads the backends Dagster writes."""

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from aiplatform_dagster_tests.infra.charts import (
    ALL,
    API,
    ENVIRONMENTS,
    WEAVIATE_CLIENT_SERVICE,
    dagster_values,
)
from aiplatform_dagster_tests.infra.helm import Manifests, container, merged
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT
from aiplatform_dagster_tests.infra.settings import (
    effective_values,
    plain_env,
    platform_variables,
)

K8S = PROJECT_ROOT / "k8s"
PLATFORM_VARIABLE = re.compile(r"\bAIPLATFORM_[A-Z0-9_]*[A-Z0-9]\b")
SHARED = {
    "AIPLATFORM_STORAGE_DIR",
    "AIPLATFORM_VECTOR_BACKEND",
    "AIPLATFORM_WEAVIATE_URL",
    "AIPLATFORM_WEAVIATE_GRPC_PORT",
    "AIPLATFORM_WEAVIATE_PREFIX",
    "AIPLATFORM_MLFLOW_TRACKING_URI",
    "AIPLATFORM_MLFLOW_MODEL_PREFIX",
}
"""Where Dagster writes what the API reads: index releases (on the storage volume or in
Weaviate, under a prefix) and registered models (in MLflow, under a prefix)."""


def mentions(text: str) -> set[str]:
    return set(PLATFORM_VARIABLE.findall(text))


def mentioned_in_k8s() -> dict[str, list[str]]:
    """Each platform variable any file under k8s/ names (comments included), with where."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in K8S.rglob("*") if p.is_file()):
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue  # not text
        for number, line in enumerate(lines, 1):
            for name in mentions(line):
                found.setdefault(name, []).append(f"{path.relative_to(K8S)}:{number}")
    return found


def set_variables(tree: Any) -> Iterator[str]:
    """The names of the variables a manifest or values tree sets: every ``env`` list's entries,
    and dagster-k8s's ``envVars`` (``NAME=value`` or ``NAME``)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == "env" and isinstance(value, list):
                yield from (variable["name"] for variable in value)
            elif key == "envVars" and isinstance(value, list):
                yield from (variable.split("=", 1)[0] for variable in value)
            else:
                yield from set_variables(value)
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from set_variables(item)


def deployed() -> Iterator[tuple[str, Any]]:
    """What k8s/ deploys: each chart rendered with each of its values files, and the Dagster
    chart's values of each environment (their templates are not here: the env lists are)."""
    for chart in ALL:
        for values_file in chart.values_files:
            yield f"{chart.release} -f {values_file}", chart.rendered(values_file)
    for environment in ENVIRONMENTS:
        yield f"dagster {environment}", dagster_values(environment)


def unread(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("AIPLATFORM_")} - platform_variables()


def service_link_variables(service: Mapping[str, Any]) -> set[str]:
    """The variables the kubelet gives every pod with service links on (Kubernetes' default)
    for a Service of its namespace (pkg/kubelet/envvars)."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    variables = {f"{name}_SERVICE_HOST", f"{name}_SERVICE_PORT", f"{name}_PORT"}
    for port in service["spec"]["ports"]:
        if port.get("name"):
            variables.add(f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        link = f"{name}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
        variables |= {link, f"{link}_PROTO", f"{link}_PORT", f"{link}_ADDR"}
    return variables


def test_the_platform_reads_the_variables_introspected_from_its_settings() -> None:
    variables = platform_variables()
    assert {"AIPLATFORM_STORAGE_DIR", "AIPLATFORM_MLFLOW_TRACKING_URI"} <= variables
    assert {"AIPLATFORM_WEAVIATE_PREFIX", "WEAVIATE_API_KEY", "OPENAI_API_KEY"} <= variables
    assert "AIPLATFORM_WEAVIATE_PREFIX_NAME" not in variables  # the field's alias wins


def test_every_platform_variable_named_in_k8s_is_one_the_platform_reads() -> None:
    named = mentioned_in_k8s()
    assert "AIPLATFORM_MLFLOW_TRACKING_URI" in named  # the scan sees comments and templates
    assert {name: named[name] for name in unread(set(named))} == {}


@pytest.mark.parametrize("label", [label for label, _ in deployed()])
def test_every_platform_variable_set_in_k8s_is_one_the_platform_reads(label: str) -> None:
    [tree] = [tree for name, tree in deployed() if name == label]
    assert unread(set(set_variables(tree))) == set(), label


def test_a_misspelt_variable_is_caught_in_a_file_and_in_the_render() -> None:
    misspelt = "AIPLATFORM_MLFLOW_TRACKNG_URI"
    assert unread(mentions(f"#   {misspelt}=http://aiplatform-mlflow:5000")) == {misspelt}
    values = merged(API.install_values, {"settings": {misspelt: "http://aiplatform-mlflow:5000"}})
    manifests: Manifests = tuple(API.render(values))
    assert unread(set(set_variables(manifests))) == {misspelt}


def test_no_service_link_sets_a_variable_the_platform_reads() -> None:
    """A Service named aiplatform-<x> gives pods AIPLATFORM_<X>_... variables, which would
    override a setting of the same name in every pod that keeps service links on (Dagster's)."""
    services = [yaml.safe_load(WEAVIATE_CLIENT_SERVICE.read_text())]
    for _, tree in deployed():
        if isinstance(tree, tuple):
            services += [m for m in tree if m["kind"] == "Service"]
    assert {service["metadata"]["name"] for service in services} >= {
        "aiplatform-api",
        "aiplatform-mlflow",
        "weaviate-client",
    }
    for service in services:
        assert not service_link_variables(service) & platform_variables(), service["metadata"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_api_reads_the_backends_dagster_writes(environment: str) -> None:
    [code_location] = dagster_values(environment)["dagster-user-deployments"]["deployments"]
    dagster = effective_values(plain_env(code_location))
    api = effective_values(plain_env(container(API.rendered(f"values-{environment}.yaml"))))
    assert {name: api[name] for name in SHARED} == {name: dagster[name] for name in SHARED}
