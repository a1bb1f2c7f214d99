"""The MLflow model registry as the platform uses it: aliases, semantic versions, alias history.

Aliases, not the deprecated stages. ``challenger`` is the newest trained version (Development);
a version that passes its gate becomes ``staging`` and then ``champion`` and ``production``
together (the query path loads ``@champion``; ``production`` names the same version for the
Development → Staging → Production vocabulary of the design). Versions are resolved only through
``get_model_version_by_alias``.

MLflow keeps no history of alias moves (mlflow#2169), so every move is also written as a tag on
the registered model (``aiplatform.alias_move.<time>``): rollback reads it, and the Dagster
``model_registry`` asset turns each one into a materialisation.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from aiplatform_dagster.errors import PlatformError

CHALLENGER = "challenger"
STAGING = "staging"
CHAMPION = "champion"
PRODUCTION = "production"
SEMVER_TAG = "aiplatform.semver"
BASE_MODEL_TAG = "aiplatform.base_model"
IDENTITY_TAG = "aiplatform.embedder_identity"
"""On an embedder version: the identity its vectors carry, which names it in a release."""
MODEL_ID_TAG = "aiplatform.model_id"
"""On an embedder version: the model id it is loaded under, part of that identity."""
MOVE_TAG_PREFIX = "aiplatform.alias_move."


class RegistryError(PlatformError):
    """A registry operation that cannot be done; the message says why and what to do."""


class MoveKind(StrEnum):
    ASSIGN = "assign"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    REPAIR = "repair"
    """An alias caught up with a release pointer that moved before a crash."""


class Change(StrEnum):
    """What a new version changes, which decides its semantic version."""

    BASE_MODEL = "major"
    RETRAINED = "minor"
    CONFIGURATION = "patch"


@dataclass(frozen=True)
class AliasMove:
    """One alias moved from one version to another, with why and by whom."""

    model: str
    alias: str
    from_version: str | None
    to_version: str
    reason: str
    by: str
    at: str
    kind: MoveKind = MoveKind.ASSIGN

    @property
    def tag_key(self) -> str:
        return f"{MOVE_TAG_PREFIX}{self.at}.{self.alias}"


class ModelRegistry:
    """Register versions, move aliases with their history, roll back."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def register(
        self,
        name: str,
        source: str,
        run_id: str,
        change: Change,
        base_model: str,
        description: str = "",
        challenger: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """A new version of ``name`` from ``source`` (a ``runs:/`` URI), tagged with its
        semantic version and base model, and (unless ``challenger`` is False) made the
        ``challenger``."""
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        semver = next_semver(self._latest_semver(name), change)
        version = self.client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={**(tags or {}), SEMVER_TAG: semver, BASE_MODEL_TAG: base_model},
            description=description,
        )
        if challenger:
            reason = f"trained in run {run_id}"
            self.move_alias(name, CHALLENGER, version.version, reason, "training")
        return version

    def has_versions(self, name: str) -> bool:
        """Whether any version of ``name`` was ever registered (raises if MLflow is down)."""
        return bool(self.client.search_model_versions(f"name='{name}'", max_results=1))

    def tagged(self, name: str, key: str, value: str) -> ModelVersion | None:
        """The newest version of ``name`` whose tag ``key`` is ``value`` (None: no such one)."""
        try:
            versions = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return None
        matching = [v for v in versions if v.tags.get(key) == value]
        return max(matching, key=lambda v: int(v.version)) if matching else None

    def version(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` names, or None when the model or the alias does not exist."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def numbered(self, name: str, version: str) -> ModelVersion | None:
        """Version ``version`` of ``name``, or None when there is no such version."""
        try:
            return self.client.get_model_version(name, version)
        except MlflowException:
            return None

    def move_alias(
        self,
        name: str,
        alias: str,
        version: str,
        reason: str,
        by: str,
        kind: MoveKind = MoveKind.ASSIGN,
    ) -> AliasMove:
        """Point ``alias`` at ``version`` and record the move."""
        previous = self.version(name, alias)
        try:
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as error:
            raise RegistryError(
                f"cannot point {name}@{alias} at version {version}: {error.message} "
                f"(aiplatform model list shows the versions)"
            ) from None
        move = AliasMove(
            model=name,
            alias=alias,
            from_version=previous.version if previous else None,
            to_version=str(version),
            reason=reason,
            by=by,
            at=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"),
            kind=kind,
        )
        self.client.set_registered_model_tag(name, move.tag_key, json.dumps(asdict(move)))
        return move

    def promote(self, name: str, version: str, reason: str, by: str) -> list[AliasMove]:
        """Make ``version`` the one served: staging, then champion and production."""
        served = (STAGING, CHAMPION, PRODUCTION)
        return [
            self.move_alias(name, alias, version, reason, by, MoveKind.PROMOTE) for alias in served
        ]

    def rollback(self, name: str, reason: str, by: str) -> list[AliasMove]:
        """Champion and production back to the champion before the current one (a rollback of
        a rollback goes one further back, it does not redo the promotion)."""
        promoted: list[str] = []
        for move in self.moves(name):
            if move.alias != CHAMPION:
                continue
            if move.kind is MoveKind.ROLLBACK and promoted:
                promoted.pop()
            else:
                promoted.append(move.to_version)
        if not promoted:
            raise RegistryError(f"{name} has no champion to roll back")
        if len(promoted) < 2:
            raise RegistryError(
                f"{name} version {promoted[-1]} was the first champion; there is nothing to roll "
                f"back to (promote a version instead: aiplatform model promote {name} VERSION)"
            )
        earlier = promoted[-2]
        return [
            self.move_alias(name, alias, earlier, reason, by, MoveKind.ROLLBACK)
            for alias in (CHAMPION, PRODUCTION)
        ]

    def moves(self, name: str) -> list[AliasMove]:
        """Every recorded alias move of ``name``, oldest first."""
        tags = self.client.get_registered_model(name).tags
        moves = [_parse_move(v) for k, v in tags.items() if k.startswith(MOVE_TAG_PREFIX)]
        return sorted(moves, key=lambda move: (move.at, move.alias))

    def models(self, prefix: str = "") -> dict[str, dict[str, str]]:
        """Each registered model named ``prefix…`` (one environment's, on a shared server) with
        its aliases (alias -> version)."""
        return {
            model.name: dict(sorted(model.aliases.items()))
            for model in self.client.search_registered_models()
            if model.name.startswith(prefix)
        }

    def _latest_semver(self, name: str) -> str | None:
        versions = self.client.search_model_versions(f"name='{name}'")
        tagged = [v.tags.get(SEMVER_TAG) for v in versions if v.tags.get(SEMVER_TAG)]
        return max(tagged, key=_semver_key) if tagged else None


def _parse_move(text: str) -> AliasMove:
    data = json.loads(text)
    return AliasMove(**{**data, "kind": MoveKind(data.get("kind", MoveKind.ASSIGN))})


def next_semver(latest: str | None, change: Change) -> str:
    """1.0.0 first; then the part ``change`` names goes up and the parts after it reset."""
    if latest is None:
        return "1.0.0"
    major, minor, patch = _semver_key(latest)
    if change is Change.BASE_MODEL:
        return f"{major + 1}.0.0"
    if change is Change.RETRAINED:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def _semver_key(semver: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in semver.split("."))
    return major, minor, patch
