"""serving_release follows ingestion and the registry (declarative automation), and flips made
outside Dagster (``aiplatform release publish|rollback``) appear on it too, so its history in
the UI is every change of what the API served."""

import dagster as dg

from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.defs.serving.assets import (
    DAGSTER_RUN,
    flip_metadata,
    serving_release,
)
from aiplatform_dagster.errors import PlatformError

serving_automation = dg.AutomationConditionSensorDefinition(
    "serving_automation",
    target=dg.AssetSelection.groups("serving"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Publishes a new serving release (smoke-tested) whenever the current index "
    "release or a model alias moves.",
)


@dg.sensor(
    name="serving_flips_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: reports each flip of the live serving release made from the "
    "command line as a materialisation of serving_release.",
)
def serving_flips_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    from aiplatform_dagster.serving.release import open_serving_releases

    releases = open_serving_releases(platform.settings())
    seen = int(context.cursor or 0)
    try:
        new = [flip for flip in releases.flips() if flip.flip > seen]
        outside = [flip for flip in new if not flip.by.startswith(DAGSTER_RUN)]
        events = [
            dg.AssetMaterialization(
                asset_key=serving_release.key,
                description=f"{flip.kind} to {flip.release} by {flip.by}: {flip.reason}",
                metadata=flip_metadata(releases.open(flip.release), flip),
            )
            for flip in outside
        ]
    except PlatformError as error:
        return dg.SkipReason(f"Cannot read the serving releases: {error}")
    if not new:
        return dg.SkipReason("No flip since the last look")
    return dg.SensorResult(asset_events=events, cursor=str(new[-1].flip))
