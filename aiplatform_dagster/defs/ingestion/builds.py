"""Which build folder an ingestion step works in.

Each run stages its build under ``builds/<run id>``. When a step runs without its upstream
steps (a user materialises only ``bm25_index``), the upstream files are linked in from the
build that the upstream asset's latest materialisation recorded, so any subset of the group
can run and every step still reads one consistent set of inputs. A run tagged with
``PLAN_TAG`` links them from the build it names instead.
"""

import os
import shutil
from collections.abc import Sequence

import dagster as dg

from aiplatform_dagster.defs.metadata import latest_metadata_value
from aiplatform_dagster.rag.index.build import Build, BuildError
from aiplatform_dagster.rag.index.releases import IndexRepository

BUILD_ID = "build_id"
"""Materialisation metadata key naming the build an ingestion step wrote."""
PLAN_TAG = "aiplatform/plan_build"
"""Run tag pinning a run to one planned build: its steps link the upstream files that build
holds from it, not from the latest materialisation (scale-out ingestion's shard and release
runs, which a newer plan must not switch under them)."""
SCALE_OUT_TAG = "aiplatform/ingestion"
"""Run tag (value ``scale-out``) of the runs that plan a build for scale-out ingestion."""
PLANNING = ("source_documents", "document_chunks")
"""The steps whose files a pinned build holds."""

PRODUCES: dict[str, tuple[str, ...]] = {
    "source_documents": ("documents.parquet",),
    "document_chunks": ("chunks.parquet", "plan.json"),
    "chunk_embeddings": ("vectors.npy",),
    "bm25_index": ("terms.json", "counts.npz"),
    "index_release": ("release.json",),
}


def run_build(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    repository: IndexRepository,
    upstream: Sequence[str],
) -> Build:
    """This run's build, with the files of ``upstream`` steps that ran elsewhere linked in
    (a check launched on its own from the UI checks what the asset last wrote)."""
    build = Build(repository, context.run.run_id)
    pinned = context.run.tags.get(PLAN_TAG)
    for asset_name in upstream:
        files = PRODUCES[asset_name]
        if all(build.exists(name) for name in files):
            continue
        if pinned and asset_name in PLANNING:
            source = pinned
        else:
            source = latest_metadata_value(context.instance, dg.AssetKey(asset_name), BUILD_ID)
        if source is None:
            raise BuildError(
                f"{asset_name} has never been materialised: materialise the ingestion group "
                "(or at least its upstream steps) first"
            )
        _link(Build(repository, source), build, files, asset_name)
        context.log.info(f"Using {asset_name} from build {source}")
    return build


def _link(source: Build, target: Build, files: Sequence[str], asset_name: str) -> None:
    target.folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        origin = source.path(name, asset_name)
        destination = target.folder / name
        if destination.exists():
            destination.unlink()
        try:
            os.link(origin, destination)
        except OSError:  # another filesystem, or links not supported: copy
            shutil.copy2(origin, destination)
