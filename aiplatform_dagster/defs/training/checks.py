"""Blocking data-quality checks on the training data (Great Expectations)."""

import dagster as dg

from aiplatform_dagster.defs.compute import CPU_SMALL, check_on_profile
from aiplatform_dagster.defs.metadata import latest_metadata_value, quality_check_result
from aiplatform_dagster.defs.training.assets import latest_training_data, router_training_data
from aiplatform_dagster.defs.training.embedder import PAIRS_PATH, retrieval_training_pairs


@dg.asset_check(asset=router_training_data, blocking=True, **check_on_profile(CPU_SMALL))
def router_training_data_is_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Unique queries, known splits and labels, scores in [0, 1], positive weights.

    Blocking: no router is trained on a table that fails it.
    """
    import pandas as pd

    from aiplatform_dagster.mlops.training_quality import check_router_frame

    path, _ = latest_training_data(context.instance)
    return quality_check_result(check_router_frame(pd.read_parquet(path)))


@dg.asset_check(asset=retrieval_training_pairs, blocking=True, **check_on_profile(CPU_SMALL))
def retrieval_training_pairs_are_valid(
    context: dg.AssetCheckExecutionContext,
) -> dg.AssetCheckResult:
    """Text on both sides, known splits, unique pairs, no query in both splits.

    Blocking: no embedder or reranker is trained on pairs that fail it.
    """
    import pandas as pd

    from aiplatform_dagster.mlops.training_quality import check_pairs_frame

    path = latest_metadata_value(context.instance, retrieval_training_pairs.key, PAIRS_PATH)
    return quality_check_result(check_pairs_frame(pd.read_parquet(path)))
