"""Models the query path loads from the registry, always through an alias."""

import re
from pathlib import Path

import mlflow.artifacts

from aiplatform_dagster.mlops.registry import ModelRegistry, RegistryError
from aiplatform_dagster.mlops.router import TrainedRouter, load_router
from aiplatform_dagster.mlops.tracking import MlflowTarget

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[\w-]+)$")


def parse_alias_uri(uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS); versions are never pinned by number here."""
    match = _ALIAS_URI.match(uri)
    if match is None:
        raise RegistryError(
            f"{uri!r} is not a registry alias URI; use models:/NAME@ALIAS, "
            "e.g. models:/query_router@champion"
        )
    return match["name"], match["alias"]


def load_registered_router(target: MlflowTarget, uri: str) -> TrainedRouter:
    """The router version the alias names now, downloaded from its run's artifacts."""
    name, alias = parse_alias_uri(uri)
    version = ModelRegistry(target.client()).version(name, alias)
    if version is None:
        raise RegistryError(
            f"{uri}: no version of {name} has the alias {alias!r} in {target.tracking_uri} "
            "(train and promote one: materialise the training group)"
        )
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, tracking_uri=target.tracking_uri
    )
    label = f"trained router {name} v{version.version} (@{alias})"
    return load_router(Path(folder), label, version.version)


def alias_version(target: MlflowTarget, uri: str) -> str | None:
    """The version ``models:/NAME@ALIAS`` names now (None when the alias is unset): a cheap
    check a long-running process makes before loading anything."""
    name, alias = parse_alias_uri(uri)
    version = ModelRegistry(target.client()).version(name, alias)
    return version.version if version else None
