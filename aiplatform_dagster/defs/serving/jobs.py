"""Roll the API back to the serving release it served before, from the launchpad."""

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import CPU_SMALL, op_on_profile
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.defs.serving.assets import (
    DAGSTER_RUN,
    flip_metadata,
    serving_release,
)
from aiplatform_dagster.errors import PlatformError


class RollbackConfig(dg.Config):
    reason: str = Field(description="Why; kept with the flip and shown on serving_release.")
    expected_live: str | None = Field(
        default=None,
        description="The release you saw live (from serving_release); if another flip came "
        "first, nothing is rolled back. Unset: roll back whatever is live.",
    )


@dg.op(**op_on_profile(CPU_SMALL))
def rollback_serving_release_op(
    context: dg.OpExecutionContext, config: RollbackConfig, platform: PlatformResource
) -> None:
    """Flip the live pointer back; the flip is reported as a materialisation of serving_release."""
    from aiplatform_dagster.serving.release import open_serving_releases

    releases = open_serving_releases(platform.settings())
    by = f"{DAGSTER_RUN} {context.run_id}"
    try:
        flip = releases.rollback(by, config.reason, config.expected_live)
        manifest = releases.open(flip.release)
    except PlatformError as error:
        raise dg.Failure(f"nothing was rolled back: {error}") from error
    context.log.info(f"live serving release: {flip.previous} -> {flip.release}")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=serving_release.key,
            description=f"rolled back to {flip.release}: {config.reason}",
            metadata=flip_metadata(manifest, flip),
        )
    )


@dg.job(
    description="Flip the API back to the serving release live before the current one (as "
    "`aiplatform release rollback --reason ...`); the API follows within its refresh interval."
)
def rollback_serving_release() -> None:
    rollback_serving_release_op()
