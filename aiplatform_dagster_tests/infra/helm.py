"""Helm, offline: values merged as `-f` and `--set` merge them, and local charts rendered by
Helm's own Go library (helm-python-sdk), with no cluster and no network; plus the small
readers of rendered manifests that the chart tests share."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from aiplatform_dagster_tests.infra.kubernetes import kubernetes_version

Manifests = tuple[dict[str, Any], ...]


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values layers: maps deep-merged, the later layer wins."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def render_chart(
    chart: Path, values: Mapping[str, Any], release: str, namespace: str
) -> list[dict[str, Any]]:
    """Every manifest ``helm template`` would print for ``chart`` with ``values``."""
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values=dict(values), name=release, namespace=namespace)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


@dataclass(frozen=True, eq=False)
class LocalChart:
    """One of this repository's charts, installed as the README's ``helm upgrade --install``:
    ``-f`` one of its own values files, then ``--set`` the install values (terraform outputs,
    the image tag), which no values file defaults."""

    path: Path
    release: str
    namespace: str
    install_values: Mapping[str, Any]

    @property
    def values_files(self) -> list[str]:
        """values.yaml and the environments' files layered on it."""
        return sorted(path.name for path in self.path.glob("values*.yaml"))

    def values_file(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.path / name).read_text()) or {}

    def install(self, values_file: str) -> dict[str, Any]:
        """What the install gives Helm; the chart's own values.yaml is its defaults."""
        layers = [] if values_file == "values.yaml" else [self.values_file(values_file)]
        return merged(*layers, self.install_values)

    def values(self, values_file: str) -> dict[str, Any]:
        """The values the templates see: the defaults under that install."""
        return merged(self.values_file("values.yaml"), self.install(values_file))

    def render(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        return render_chart(self.path, values, self.release, self.namespace)

    def refusal(self, values: Mapping[str, Any]) -> str:
        """The message of the error the render of ``values`` must fail with."""
        try:
            self.render(values)
        except helm.HelmRenderError as error:
            return str(error)
        raise AssertionError("the chart rendered values it should refuse")

    def rendered(self, values_file: str) -> Manifests:
        """The manifests the install would apply (rendered once per values file)."""
        return _rendered(self, values_file)

    def lint_problems(self, values_file: str) -> list[Any]:
        """``helm lint --strict`` at the cluster's Kubernetes version: errors and warnings."""
        report = helm.lint(
            self.path,
            self.install(values_file),
            strict=True,
            namespace=self.namespace,
            kube_version=f"v{kubernetes_version()}.0",
        )
        return [*report["errors"], *[m for m in report["messages"] if m["severity"] >= 2]]


@cache
def _rendered(chart: LocalChart, values_file: str) -> Manifests:
    return tuple(chart.render(chart.install(values_file)))


def one(manifests: Manifests, kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(manifests: Manifests, kind: str = "Deployment") -> dict[str, Any]:
    return one(manifests, kind)["spec"]["template"]["spec"]


def container(manifests: Manifests, kind: str = "Deployment") -> dict[str, Any]:
    """The one container of the pods of the one ``kind`` object."""
    (only,) = pod_spec(manifests, kind)["containers"]
    return only


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a ``matchLabels`` selector matches an object with ``labels`` (empty: all)."""
    assert "matchExpressions" not in selector, "only matchLabels is read here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar in a values tree, with its dotted path."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from leaves(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from leaves(inner, f"{path}[{index}]")
    else:
        yield path, value
