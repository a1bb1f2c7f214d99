"""Evaluation follows the indexes: a declarative-automation sensor, on by default."""

import dagster as dg

evaluation_automation = dg.AutomationConditionSensorDefinition(
    "evaluation_automation",
    target=dg.AssetSelection.groups("evaluation"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materialises retrieval_eval whenever the current index release changes.",
)
