"""Publish a serving release: pin what the configuration names now, smoke-test it against the
live release, and flip the live pointer only if it passes.

What the ``serving_release`` asset and ``aiplatform release publish`` both run. A candidate that
pins exactly what the live release pins is not published again (no flip without a change). With
``AIPLATFORM_QUERY_INFERENCE`` set to an ONNX path, the candidate first runs the ONNX gate and
pins that path only if it passes; otherwise it pins PyTorch and its manifest says why.
"""

from collections.abc import Callable
from dataclasses import dataclass

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.evaluation.onnx_gate import OnnxGateReport, onnx_gate
from aiplatform_dagster.evaluation.runner import judged_questions_dir
from aiplatform_dagster.evaluation.smoke import SmokeReport, smoke_evaluate
from aiplatform_dagster.models.onnx_inference import TORCH, OnnxInference
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.serving.release import (
    Flip,
    ServingManifest,
    ServingReleases,
    draft_manifest,
    open_serving_releases,
    pinned_settings,
)

PINNED = (
    "index_release", "embedder", "router", "reranker", "prompt_version", "llm_model", "query",
    "inference",
)  # fmt: skip
"""The manifest fields that decide what is served; two releases equal on these are the same."""


@dataclass(frozen=True)
class Publication:
    manifest: ServingManifest
    """The candidate (stored with its smoke results), or the live release when unchanged."""
    report: SmokeReport | None
    """None when nothing changed, so nothing was evaluated."""
    flip: Flip | None

    @property
    def decision(self) -> str:
        if self.report is None:
            return f"unchanged: the live release {self.manifest.release_id} pins the same"
        return self.report.decision


def publish_serving_release(
    settings: Settings, created_by: str, log: Callable[[str], None] = lambda _: None
) -> Publication:
    """Pin, smoke-test and (if it passes) flip; the candidate's manifest is stored either way,
    so a refused release can be inspected."""
    releases = open_serving_releases(settings)
    live = releases.live()
    draft = draft_manifest(settings, created_by)
    wanted = settings.query.inference
    live_manifest = _open_live(releases, live.release if live else None, log)
    if live_manifest is not None and _same(
        draft.model_copy(update={"inference": wanted}), live_manifest
    ):
        return Publication(live_manifest, None, None)
    log(f"candidate {draft.release_id}: index {draft.index_release}, router "
        f"{draft.router or 'rules'}, reranker {draft.reranker or 'none'}")  # fmt: skip
    candidate = engine_for(settings, draft, releases)
    if wanted != TORCH:
        draft, candidate = _gate_onnx(settings, wanted, draft, candidate, releases, log)
        if live_manifest is not None and _same(draft, live_manifest):  # refused again
            return Publication(live_manifest, None, None)
    baseline = None
    if live_manifest is not None:
        try:
            baseline = engine_for(settings, live_manifest, releases)
        except PlatformError as error:
            log(f"the live release {live_manifest.release_id} cannot be loaded to compare: {error}")
    report = smoke_evaluate(
        candidate,
        baseline,
        live_manifest.release_id if baseline else None,
        settings.serving.smoke_max_ndcg_drop,
        judged_questions_dir(settings),
    )
    manifest = draft.model_copy(update={"smoke": report.as_dict()})
    releases.write(manifest)
    flip = None
    if report.passed:
        expected = live.release if live else None
        flip = releases.publish(manifest.release_id, expected, created_by, report.decision)
    return Publication(manifest, report, flip)


def engine_for(
    settings: Settings, manifest: ServingManifest, releases: ServingReleases
) -> QueryEngine:
    """The query engine a serving release pins, recording nothing to the query log."""
    release = releases.index.open(manifest.index_release).load()
    return factory.build_query_engine(
        pinned_settings(settings, manifest), release, inference=manifest.inference
    )


def _gate_onnx(
    settings: Settings,
    wanted: OnnxInference,
    draft: ServingManifest,
    torch_engine: QueryEngine,
    releases: ServingReleases,
    log: Callable[[str], None],
) -> tuple[ServingManifest, QueryEngine]:
    """The draft pinning the ``wanted`` ONNX path and its engine if the ONNX gate passes, else
    the PyTorch ones; the manifest records the gate either way."""
    onnx = draft.model_copy(update={"inference": wanted})
    max_loss = settings.query.onnx_max_ndcg_loss
    try:
        onnx_engine = engine_for(settings, onnx, releases)
        report = onnx_gate(
            torch_engine, onnx_engine, wanted, max_loss, judged_questions_dir(settings)
        )
    except Exception as error:  # any failure to export or run ONNX keeps PyTorch
        report = OnnxGateReport(wanted, max_loss, error=f"{type(error).__name__}: {error}")
    log(f"ONNX gate: {report.decision}")
    chosen, engine = (onnx, onnx_engine) if report.passed else (draft, torch_engine)
    return chosen.model_copy(update={"inference_gate": report.as_dict()}), engine


def _open_live(
    releases: ServingReleases, release_id: str | None, log: Callable[[str], None]
) -> ServingManifest | None:
    if release_id is None:
        return None
    try:
        return releases.open(release_id)
    except PlatformError as error:
        log(f"the live release cannot be read, publishing over it: {error}")
        return None


def _same(a: ServingManifest, b: ServingManifest) -> bool:
    return a.model_dump(include=set(PINNED)) == b.model_dump(include=set(PINNED))
