"""Serving releases: what the API answers from, pinned so that nothing changes under it.

A serving release is an immutable manifest: the index release, the embedder that built its
vectors, the router and reranker as registry *versions* (the aliases resolved when it was made),
the prompt version, the query configuration and the inference path (float, or int8 once the
quantisation gate passed). The ``live`` pointer names the release the API
serves and the one it replaced (blue/green: both stay loadable); a flip is a compare-and-swap
under a lock that holds across processes, and every flip is appended to ``flips.jsonl``.

The index releases a serving release pins are held by the index repository's own pointers
(``serving_live`` and ``serving_previous``), so index retention never deletes what a rollback
would return to.

Layout (``storage/serving`` by default)::

    releases/<id>.json   one manifest per serving release, written once
    live.json            {"release", "previous", "flipped_at", "by", "reason", "flip"}
    flips.jsonl          every flip, append-only
    writer.lock
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.onnx_inference import TORCH, Inference
from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.index.lock import writer_lock
from aiplatform_dagster.rag.index.releases import IndexRepository, new_release_id
from aiplatform_dagster.rag.query.prompts import PROMPT_VERSION

INDEX_LIVE = "serving_live"
INDEX_PREVIOUS = "serving_previous"
PINNED_QUERY_FIELDS = (
    "candidates", "top_n", "dense_weight", "fusion", "context_tokens", "keyword_max_words",
    "semantic_min_words", "router_model",
)  # fmt: skip
"""What changes answers: pinned. The price table and devices are the deployment's, not pinned."""


class ServingReleaseError(PlatformError):
    """A serving release or flip that cannot go ahead; the message says why and what to do."""


class ServingManifest(BaseModel):
    """One serving release. Model references are pinned versions (models:/NAME/3), never
    aliases, so the release serves the same models for its whole life."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format_version: Literal[1] = 1
    release_id: str
    created_at: datetime
    created_by: str
    index_release: str
    embedder: str
    """Identity (digest) of the embedder that built the index release's vectors."""
    embedder_model: str
    router: str | None
    """Pinned registry URI of the trained router; None: the routing rules in ``query``."""
    reranker: str | None
    """Pinned registry URI, folder or hub name of the cross-encoder; None: no reranking."""
    prompt_version: str
    llm_model: str | None
    """The chat model (or Azure deployment) answers come from; None: extractive answers."""
    query: dict[str, Any]
    smoke: dict[str, Any]
    inference: Inference = TORCH
    """How the query encoder and reranker run: an ONNX path only when the ONNX gate passed for
    this release (manifests from before the ONNX paths have none: "torch")."""
    inference_gate: dict[str, Any] = Field(default_factory=dict)
    """The ONNX gate's numbers and decision; empty when no ONNX path was asked for."""


class Flip(BaseModel):
    """One move of the live pointer."""

    model_config = ConfigDict(frozen=True)
    release: str
    previous: str | None
    flipped_at: datetime
    by: str
    reason: str
    flip: int
    kind: Literal["publish", "rollback"]


class ServingReleases:
    """The serving releases of one storage folder and the pointer to the live one."""

    def __init__(self, root: Path, index: IndexRepository, lock_timeout_s: float = 600.0):
        self.root = Path(root)
        self.index = index
        self.lock_timeout_s = lock_timeout_s

    def write(self, manifest: ServingManifest) -> None:
        """Store a new manifest; an id is written once and never replaced."""
        path = self._manifest_path(manifest.release_id)
        if path.exists():
            raise ServingReleaseError(f"serving release {manifest.release_id} already exists")
        text = manifest.model_dump_json(indent=2)
        write_atomically(path, lambda pending: pending.write_text(text, "utf-8"))

    def open(self, release_id: str) -> ServingManifest:
        path = self._manifest_path(release_id)
        try:
            return ServingManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ServingReleaseError(
                f"no serving release {release_id!r} under {self.root / 'releases'}: "
                f"known: {self.release_ids()[-5:]}"
            ) from None
        except (OSError, ValidationError) as error:
            raise ServingReleaseError(
                f"serving release manifest {path} is unreadable or corrupt ({_first_line(error)}); "
                "publish a new release (materialise serving_release) or roll back"
            ) from error

    def release_ids(self) -> list[str]:
        """Every stored release, oldest first (ids sort by creation time)."""
        return sorted(path.stem for path in (self.root / "releases").glob("*.json"))

    def live(self) -> Flip | None:
        """The last flip: which release is live and which it replaced (None: never published)."""
        path = self.root / "live.json"
        try:
            return Flip.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as error:
            raise ServingReleaseError(
                f"live pointer {path} is unreadable ({_first_line(error)}); run "
                "`aiplatform release rollback` or publish a new release to rewrite it"
            ) from error

    def live_manifest(self) -> ServingManifest:
        flip = self.live()
        if flip is None:
            raise ServingReleaseError(
                f"no serving release is live under {self.root}: materialise serving_release "
                "(`make ingest` does it), or `aiplatform release publish`"
            )
        return self.open(flip.release)

    def flips(self) -> list[Flip]:
        """Every flip, oldest first."""
        path = self.root / "flips.jsonl"
        if not path.exists():
            return []
        return [Flip.model_validate_json(line) for line in path.read_text("utf-8").splitlines()]

    def publish(self, release_id: str, expected: str | None, by: str, reason: str) -> Flip:
        """Make ``release_id`` live if the live release is still ``expected`` (None: none yet);
        the one it replaces becomes the rollback target."""
        with self._lock(f"publish {release_id}"):
            self.open(release_id)
            now = self.live()
            current = now.release if now else None
            if current != expected:
                raise ServingReleaseError(
                    f"the live serving release moved from {expected} to {current} while "
                    f"{release_id} was being checked; nothing was flipped. Materialise "
                    "serving_release again to check against the new live release."
                )
            return self._flip(release_id, current, by, reason, "publish", now)

    def rollback(self, by: str, reason: str, expected: str | None = None) -> Flip:
        """Flip back to the release the live one replaced (and make the live one the target of
        the next rollback). ``expected`` guards against rolling back a flip the caller never
        saw."""
        with self._lock("rollback"):
            now = self.live()
            if now is None or now.previous is None:
                raise ServingReleaseError(
                    "nothing to roll back to: no serving release was live before this one"
                )
            if expected is not None and now.release != expected:
                raise ServingReleaseError(
                    f"the live serving release is {now.release}, not {expected}: someone flipped "
                    "it meanwhile; nothing was rolled back"
                )
            self.open(now.previous)
            return self._flip(now.previous, now.release, by, reason, "rollback", now)

    def _flip(
        self,
        release_id: str,
        previous: str | None,
        by: str,
        reason: str,
        kind: Literal["publish", "rollback"],
        now: Flip | None,
    ) -> Flip:
        """Hold both index releases first (retention never deletes them), then move the pointer."""
        manifest = self.open(release_id)
        self._hold(INDEX_LIVE, manifest.index_release)
        if previous is not None:
            self._hold(INDEX_PREVIOUS, self.open(previous).index_release)
        flip = Flip(
            release=release_id,
            previous=previous,
            flipped_at=datetime.now(UTC),
            by=by,
            reason=reason,
            flip=(now.flip + 1) if now else 1,
            kind=kind,
        )
        line = flip.model_dump_json()
        with (self.root / "flips.jsonl").open("a", encoding="utf-8") as log:
            log.write(line + "\n")
        write_atomically(self.root / "live.json", lambda pending: pending.write_text(line, "utf-8"))
        return flip

    def _hold(self, pointer: str, index_release: str) -> None:
        held = self.index.pointer(pointer)
        if held != index_release:
            self.index.move_pointer(index_release, held, pointer)

    def _lock(self, purpose: str) -> Any:
        return writer_lock(self.root / "writer.lock", self.lock_timeout_s, purpose)

    def _manifest_path(self, release_id: str) -> Path:
        if not release_id.replace("-", "").isalnum():
            raise ServingReleaseError(f"{release_id!r} is not a serving release id")
        return self.root / "releases" / f"{release_id}.json"


def open_serving_releases(settings: Settings) -> ServingReleases:
    from aiplatform_dagster.rag.factory import open_repository

    return ServingReleases(
        settings.paths.storage_dir / "serving",
        open_repository(settings),
        settings.releases.lock_timeout_s,
    )


def draft_manifest(settings: Settings, created_by: str) -> ServingManifest:
    """Pin what the configuration names now: the ``current`` index release, and the router and
    reranker versions their aliases name (resolved once, here)."""
    from aiplatform_dagster.rag import factory

    release = factory.open_repository(settings).open_pointer()
    versions = factory.model_versions(settings)
    router = _pinned(settings.query.router_model, versions.router)
    reranker = _pinned(settings.reranker.model, versions.reranker)
    query = settings.query.model_dump(mode="json", include=set(PINNED_QUERY_FIELDS))
    query["router_model"] = router
    llm = factory.llm_settings(settings)
    return ServingManifest(
        release_id=new_release_id(prefix="s"),
        created_at=datetime.now(UTC),
        created_by=created_by,
        index_release=release.release_id,
        embedder=release.embedder_identity,
        embedder_model=release.manifest["embedder"]["model_id"],
        router=router,
        reranker=reranker,
        prompt_version=PROMPT_VERSION,
        llm_model=llm.model if llm.is_configured else None,
        query=query,
        smoke={},
    )


def pinned_settings(settings: Settings, manifest: ServingManifest) -> Settings:
    """``settings`` with the release's query configuration and pinned model versions.

    A release made for another prompt version is refused: this build cannot serve that prompt,
    and serving it anyway would break the release's promise. The LLM endpoint and its key stay
    the deployment's; the model name is the release's, and a release smoke-tested without a
    model answers extractively even where one is configured now (publish to change that).
    """
    if manifest.prompt_version != PROMPT_VERSION:
        raise ServingReleaseError(
            f"serving release {manifest.release_id} pins prompt {manifest.prompt_version}, and "
            f"this build has {PROMPT_VERSION}: publish a new serving release from this build"
        )
    llm = (
        {"model": manifest.llm_model}
        if manifest.llm_model
        else {"base_url": None, "azure_endpoint": None, "api_key": None}  # extractive, as tested
    )
    return settings.replace(query=manifest.query, reranker={"model": manifest.reranker}, llm=llm)


def follow_live(settings: Settings, releases: ServingReleases | None = None) -> Any:
    """What the API follows: the live serving release (see ``rag.factory.LiveQueryEngine``)."""
    from aiplatform_dagster.rag.factory import ModelVersions, Target

    releases = releases or open_serving_releases(settings)

    def target() -> Target:
        manifest = releases.live_manifest()
        versions = ModelVersions(
            router=_version(manifest.router), reranker=_version(manifest.reranker)
        )
        return Target(
            manifest.release_id,
            manifest.index_release,
            versions,
            pinned_settings(settings, manifest),
            manifest.inference,
        )

    return target


def _pinned(model: str | None, version: str | None) -> str | None:
    """A registry alias becomes the version it names now; anything else stays as configured."""
    if model is None or version is None:
        return model
    from aiplatform_dagster.mlops.serving import parse_model_uri

    return parse_model_uri(model).pinned(version)


def _version(model: str | None) -> str | None:
    """The version a pinned registry URI names (None: not a registry model)."""
    if not (model and model.startswith("models:/")):
        return None
    from aiplatform_dagster.mlops.serving import parse_model_uri

    return parse_model_uri(model).version


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
