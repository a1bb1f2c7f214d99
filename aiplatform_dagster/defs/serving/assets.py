"""The thin serving asset: pin, smoke-test and publish what the API serves.

``serving_release`` runs the same ``publish_serving_release`` as ``aiplatform release publish``.
It reruns by itself when ``current`` moves or a model alias moves (so a promoted router or
reranker reaches the API only through a smoke-tested release), and records a materialisation
only when the live release flips; a candidate that fails its smoke test fails the run with why.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg

from aiplatform_dagster.defs.automation import follows_its_dependencies
from aiplatform_dagster.defs.compute import CPU_LARGE, on_profile
from aiplatform_dagster.defs.ingestion.assets import current_release
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.defs.training.registry import model_registry

if TYPE_CHECKING:  # the domain modules load in the steps that use them
    from aiplatform_dagster.serving.release import Flip, ServingManifest

GROUP = "serving"
OWNERS = ["team:ml-platform"]
DAGSTER_RUN = "dagster run"
"""How flips made by a run are recorded (``by``): the flip sensor reports only the others."""

AUTOMATION = follows_its_dependencies().replace(
    "any_deps_missing",
    dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(model_registry.key)),
)
"""Follows its dependencies, also before any model is trained (model_registry stays missing
until a first move), never before ingestion has made a ``current`` release."""


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "fastapi"},
    deps=[current_release, model_registry],
    automation_condition=AUTOMATION,
    output_required=False,
    code_version="1",
    **on_profile(CPU_LARGE),
)
def serving_release(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> Iterator[dg.MaterializeResult]:
    """The release the API serves: the ``current`` index release, the embedder that built it,
    the router and reranker versions their aliases name now, the prompt version, the LLM model
    and the query configuration, pinned in an immutable manifest.

    It is smoke-tested (golden questions end to end, routed nDCG@10 against the live release)
    and only then made live; the release it replaces stays loadable, and `aiplatform release
    rollback` (or the rollback_serving_release job) flips back. Nothing changed: no new release.
    """
    from aiplatform_dagster.serving.publish import publish_serving_release

    publication = publish_serving_release(
        platform.settings(), f"{DAGSTER_RUN} {context.run_id}", context.log.info
    )
    context.log.info(publication.decision)
    if publication.report is None:
        return
    if publication.flip is None:
        raise dg.Failure(
            f"serving release {publication.manifest.release_id} was not published: "
            f"{publication.decision}. The live release keeps serving.",
            metadata=release_metadata(publication.manifest),
        )
    yield dg.MaterializeResult(metadata=flip_metadata(publication.manifest, publication.flip))


def release_metadata(release: "ServingManifest") -> dict[str, Any]:
    """What a data scientist reads on the asset page: the pins and the smoke test."""
    manifest = release.model_dump(mode="json")
    smoke = manifest["smoke"]
    metadata: dict[str, Any] = {
        "release_id": manifest["release_id"],
        "index_release": manifest["index_release"],
        "embedder": manifest["embedder_model"],
        "router": manifest["router"] or "rules",
        "reranker": manifest["reranker"] or "none",
        "prompt_version": manifest["prompt_version"],
        "llm_model": manifest["llm_model"] or "none (extractive answers)",
        "query": markdown_table([manifest["query"]]),
        "inference": manifest["inference"],
        "manifest": dg.MetadataValue.json(manifest),
    }
    if manifest["inference_gate"]:
        metadata["onnx_gate"] = manifest["inference_gate"]["decision"]
    if smoke:
        metadata |= {
            "smoke_decision": smoke["decision"],
            "smoke_ndcg@10": float(smoke["score"]),
            "smoke_baseline_ndcg@10": float(smoke["baseline_score"] or 0.0),
            "smoke_p95_ms": float(smoke["p95_ms"]),
            "smoke_failures": dg.MetadataValue.json(smoke["failures"]),
        }
    return metadata


def flip_metadata(release: "ServingManifest", flip: "Flip") -> dict[str, Any]:
    """A flip's materialisation: the release it made live, and who flipped it, when and why."""
    return {
        **release_metadata(release),
        "flip": flip.flip,
        "kind": flip.kind,
        "previous_release": flip.previous or "none",
        "flipped_by": flip.by,
        "reason": flip.reason,
    }
