"""Models the query path loads from the registry: through an alias (what training moves), or
pinned to a version number (what a serving release serves)."""

import re
import shutil
import uuid
from dataclasses import dataclass
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

_MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model named by an alias (what training moves) or by a version number (what a
    serving release pins, so the model it serves never changes under it)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def wanted(self) -> str:
        """What a version must be to match, for error messages."""
        return f"has the alias {self.alias!r}" if self.alias else f"is version {self.version}"

    def pinned(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    def resolve(self, registry: ModelRegistry) -> ModelVersion | None:
        """The version this reference names now (None: the alias is unset or no such version)."""
        if self.version is not None:
            return registry.numbered(self.name, self.version)
        return registry.version(self.name, self.alias or "")


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise RegistryError(
            f"{uri!r} is not a registry URI; use models:/NAME@ALIAS (e.g. "
            "models:/query_router@champion) or models:/NAME/VERSION"
        )
    return ModelRef(match["name"], match["alias"], match["version"])


def load_registered_router(target: MlflowTarget, uri: str, cache_root: Path) -> TrainedRouter:
    """The router version the URI names (downloaded once into ``cache_root``)."""
    version, folder = model_folder(target, uri, cache_root)
    ref = parse_model_uri(uri)
    named = f"@{ref.alias}" if ref.alias else "pinned"
    return load_router(folder, f"trained router {ref.name} v{version} ({named})", version)


def resolved_version(target: MlflowTarget, uri: str) -> str | None:
    """The version a registry URI names now (None when the alias is unset): a cheap check a
    long-running process makes before loading anything."""
    version = parse_model_uri(uri).resolve(ModelRegistry(target.client()))
    return str(version.version) if version else None


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


def model_folder(target: MlflowTarget, uri: str, cache_root: Path) -> tuple[str, Path]:
    """The version a registry URI names now and its files on this machine."""
    ref = parse_model_uri(uri)
    version = ref.resolve(ModelRegistry(target.client()))
    if version is None:
        raise RegistryError(
            f"{uri}: no version of {ref.name} {ref.wanted} in {target.tracking_uri} "
            "(train and promote one: materialise the training group)"
        )
    return version.version, registered_folder(target, version, cache_root)


def optional_model_folder(
    target: MlflowTarget, uri: str, cache_root: Path
) -> tuple[str, Path] | None:
    """Like ``model_folder``, but None while nothing was ever registered under the name: the
    state before the first training, when the query path runs without that model."""
    if not ModelRegistry(target.client()).has_versions(parse_model_uri(uri).name):
        return None
    return model_folder(target, uri, cache_root)


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
    ref = parse_model_uri(uri)
    name = ref.name
    registry = ModelRegistry(target.client())
    version = registry.tagged(name, IDENTITY_TAG, built_identity) if built_identity else None
    version = version or ref.resolve(registry)
    if version is None:
        if not registry.has_versions(name):  # nothing trained yet: the base it will register
            return SentenceTransformerEmbedder(device=device, batch_size=batch_size)
        raise RegistryError(
            f"{uri}: no version of {name} {ref.wanted} in {target.tracking_uri}: "
            f"promote one (materialise embedder_validation), or set AIPLATFORM_EMBEDDING_MODEL "
            "to another alias or model folder"
        )
    folder = registered_folder(target, version, cache_root)
    name_tag = version.tags.get(MODEL_ID_TAG) or f"models:/{name}/{version.version}"
    return SentenceTransformerEmbedder(str(folder), device, batch_size, name=name_tag)
