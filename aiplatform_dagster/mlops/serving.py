"""Models the query path loads from the registry, always through an alias."""

import re
import shutil
import uuid
from pathlib import Path

import mlflow.artifacts
from mlflow.entities.model_registry import ModelVersion

from aiplatform_dagster.mlops.registry import (
    IDENTITY_TAG,
    MODEL_ID_TAG,
    ModelRegistry,
    RegistryError,
)
from aiplatform_dagster.mlops.router import TrainedRouter, load_router
from aiplatform_dagster.mlops.tracking import MlflowTarget
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder

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


def load_registered_router(target: MlflowTarget, uri: str, cache_root: Path) -> TrainedRouter:
    """The router version the alias names now (downloaded once into ``cache_root``)."""
    version, folder = alias_folder(target, uri, cache_root)
    name, alias = parse_alias_uri(uri)
    return load_router(folder, f"trained router {name} v{version} (@{alias})", version)


def alias_version(target: MlflowTarget, uri: str) -> str | None:
    """The version ``models:/NAME@ALIAS`` names now (None when the alias is unset): a cheap
    check a long-running process makes before loading anything."""
    name, alias = parse_alias_uri(uri)
    version = ModelRegistry(target.client()).version(name, alias)
    return version.version if version else None


def registered_folder(target: MlflowTarget, version: ModelVersion, cache_root: Path) -> Path:
    """The version's files on this machine, downloaded once: versions never change, so
    ``cache_root/NAME/VERSION`` is reused by every process (renamed into place when complete)."""
    folder = Path(cache_root) / version.name / str(version.version)
    if folder.is_dir():
        return folder
    scratch = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    scratch.mkdir(parents=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, dst_path=str(scratch), tracking_uri=target.tracking_uri
        )
        try:
            Path(local).rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def alias_folder(target: MlflowTarget, uri: str, cache_root: Path) -> tuple[str, Path]:
    """The version ``models:/NAME@ALIAS`` names now and its files on this machine."""
    name, alias = parse_alias_uri(uri)
    version = ModelRegistry(target.client()).version(name, alias)
    if version is None:
        raise RegistryError(
            f"{uri}: no version of {name} has the alias {alias!r} in {target.tracking_uri} "
            "(train and promote one: materialise the training group)"
        )
    return version.version, registered_folder(target, version, cache_root)


def optional_alias_folder(
    target: MlflowTarget, uri: str, cache_root: Path
) -> tuple[str, Path] | None:
    """Like ``alias_folder``, but None while nothing was ever registered under the name: the
    state before the first training, when the query path runs without that model."""
    name, _ = parse_alias_uri(uri)
    if not ModelRegistry(target.client()).has_versions(name):
        return None
    return alias_folder(target, uri, cache_root)


def registered_embedder(
    target: MlflowTarget,
    uri: str,
    cache_root: Path,
    device: str = "cpu",
    batch_size: int = 64,
    built_identity: str | None = None,
) -> SentenceTransformerEmbedder:
    """An embedder from the registry: the version whose vectors carry ``built_identity`` (the
    release being read or extended keeps the embedder that built it), else the version the
    alias names now (a first build, or a release built by an unregistered model). Before the
    first training registers anything, the packaged all-MiniLM-L6-v2: the version 1 it will
    register."""
    name, alias = parse_alias_uri(uri)
    registry = ModelRegistry(target.client())
    version = registry.tagged(name, IDENTITY_TAG, built_identity) if built_identity else None
    version = version or registry.version(name, alias)
    if version is None:
        if not registry.has_versions(name):  # nothing trained yet: the base it will register
            return SentenceTransformerEmbedder(device=device, batch_size=batch_size)
        raise RegistryError(
            f"{uri}: no version of {name} has the alias {alias!r} in {target.tracking_uri}: "
            f"promote one (materialise embedder_validation), or set AIPLATFORM_EMBEDDING_MODEL "
            "to another alias or model folder"
        )
    folder = registered_folder(target, version, cache_root)
    name_tag = version.tags.get(MODEL_ID_TAG) or f"models:/{name}/{version.version}"
    return SentenceTransformerEmbedder(str(folder), device, batch_size, name=name_tag)
