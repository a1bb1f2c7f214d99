"""Offline Kubernetes checks shared by the infrastructure tests: every manifest is validated
with kubernetes-validate in strict mode (misspelt fields fail) against the version that
``terraform/`` pins for AKS, so the manifests and the cluster cannot drift apart."""

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import hcl2
import kubernetes_validate
from hcl2.utils import SerializationOptions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = PROJECT_ROOT / "terraform"

CUSTOM_RESOURCE_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PrometheusRule"})
"""Custom resources (Prometheus Operator) that have no schema in kubernetes-validate; they
are allowed by name only, and everything else must validate."""


def load_hcl(path: Path) -> dict[str, Any]:
    """A Terraform file as python-hcl2 parses it, string values without their quotes."""
    with path.open() as handle:
        return hcl2.load(
            handle, serialization_options=SerializationOptions(strip_string_quotes=True)
        )


def terraform_variable_default(name: str) -> Any:
    """The default of a variable declared in ``terraform/variables.tf``."""
    for block in load_hcl(TERRAFORM_DIR / "variables.tf").get("variable", []):
        if name in block:
            return block[name]["default"]
    raise KeyError(f"terraform/variables.tf declares no variable {name!r}")


def kubernetes_version() -> str:
    """The Kubernetes minor version AKS runs (``kubernetes_version`` in terraform/)."""
    return str(terraform_variable_default("kubernetes_version"))


def validate_manifests(manifests: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every problem kubernetes-validate finds, as ``kind/name: message``; empty when valid."""
    version = kubernetes_version()
    problems = []
    for manifest in manifests:
        kind = manifest.get("kind", "?")
        name = manifest.get("metadata", {}).get("name", "?")
        if kind in CUSTOM_RESOURCE_KINDS:
            continue
        try:
            kubernetes_validate.validate(dict(manifest), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{kind}/{name}: {error.message} at {list(error.path)}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{kind}/{name}: no schema for {error} in Kubernetes {version}")
    return problems
