"""The Dagster adapter over the platform configuration (``aiplatform_dagster/config.py``).

One resource, ``platform``: it reads the same settings the CLI and the serving API read
(environment, optional YAML profile, laptop defaults) and lets a run override any of them
from the launchpad, shaped like the profile file. Everything it builds comes from the domain
factory, so Dagster, the CLI and the API can never configure the query path differently.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from aiplatform_dagster.config import PROFILE_VARIABLE, Settings, load_settings
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import IndexRepository, Release, Retention
from aiplatform_dagster.rag.index.vector_backends import VectorBackend
from aiplatform_dagster.rag.query.engine import QueryEngine

if TYPE_CHECKING:  # mlflow loads in the steps that use it, not in every Dagster process
    from aiplatform_dagster.mlops.tracking import MlflowTarget, TrackedRun


class PlatformResource(dg.ConfigurableResource):
    """The platform's configuration and what it builds: repository, embedder, backend, engine.

    Secrets are never fields here: they come from the environment of the code location.
    """

    profile: str | None = Field(
        default=None,
        description=f"YAML profile file ({PROFILE_VARIABLE}); environment variables win over it.",
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default={},
        description="Settings for this run, shaped like the profile: {section: {field: value}}, "
        "e.g. {'query': {'top_n': 5}} or {'paths': {'documents_dir': '/data/docs'}}.",
    )

    def settings(self) -> Settings:
        environ = dict(os.environ)
        if self.profile:
            environ[PROFILE_VARIABLE] = self.profile
        settings = load_settings(environ)
        return settings.replace(**self.overrides) if self.overrides else settings

    def repository(self) -> IndexRepository:
        return factory.open_repository(self.settings())

    def retention(self) -> Retention:
        return factory.retention(self.settings())

    def embedder(self) -> Embedder:
        """The embedder that extends the current release (see ``factory.current_embedder``)."""
        return factory.current_embedder(self.settings())

    def vector_backend(self) -> VectorBackend:
        return factory.build_vector_backend(self.settings())

    def query_engine(self, release: Release | None = None) -> QueryEngine:
        """The query path over ``release``, or over the release ``current`` names."""
        return factory.build_query_engine(self.settings(), release)


class MlflowResource(dg.ConfigurableResource):
    """MLflow for the platform's assets: one MLflow run per materialisation, tagged with the
    asset, partition, Dagster run, code version and dataset version that made it.

    Not dagster-mlflow's op-level resource: that one keeps a process-wide active run and ends it
    when any op finishes (dagster-io/dagster#21872); here each materialisation opens and closes
    its own run through an explicit client.
    """

    platform: PlatformResource

    def target(self) -> "MlflowTarget":
        from aiplatform_dagster.mlops.tracking import mlflow_target

        return mlflow_target(self.platform.settings())

    @contextmanager
    def run_for(
        self, context: dg.AssetExecutionContext, dataset_version: str | None
    ) -> Iterator["TrackedRun"]:
        """The MLflow run of this materialisation; FAILED if the asset raises."""
        from aiplatform_dagster.mlops.tracking import tracked_run

        key = context.asset_key
        tags = {
            "dagster/asset_key": key.to_user_string(),
            "dagster/run_id": context.run_id,
            "dagster/partition": context.partition_key if context.has_partition_key else "",
            "dagster/code_version": context.assets_def.code_versions_by_key.get(key) or "",
            "aiplatform/dataset_version": dataset_version or "",
        }
        name = f"{key.to_user_string()}-{context.run_id[:8]}"
        with tracked_run(self.target(), name, tags) as run:
            yield run


@dg.definitions
def resources() -> dg.Definitions:
    platform = PlatformResource(profile=os.environ.get(PROFILE_VARIABLE))
    return dg.Definitions(
        resources={"platform": platform, "mlflow": MlflowResource(platform=platform)}
    )
