"""Helm, offline: values merged as `-f` and `--set` merge them, and local charts rendered by
Helm's own Go library (helm-python-sdk), with no cluster and no network."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml


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
