"""Blocking data-quality check on the router's training data (Great Expectations)."""

import dagster as dg

from aiplatform_dagster.defs.compute import ComputePool, on_pool
from aiplatform_dagster.defs.metadata import quality_check_result
from aiplatform_dagster.defs.training.assets import latest_training_data, router_training_data


@dg.asset_check(asset=router_training_data, blocking=True, **on_pool(ComputePool.CPU))
def router_training_data_is_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Unique queries, known splits and labels, scores in [0, 1], positive weights.

    Blocking: no router is trained on a table that fails it.
    """
    import pandas as pd

    from aiplatform_dagster.mlops.training_quality import check_router_frame

    path, _ = latest_training_data(context.instance)
    return quality_check_result(check_router_frame(pd.read_parquet(path)))
