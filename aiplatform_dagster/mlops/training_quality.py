"""Great Expectations suites for the training data: what a bad label table looks like."""

import great_expectations as gx
import pandas as pd

from aiplatform_dagster.mlops.router import MODES
from aiplatform_dagster.rag.ingest.quality import QualityResult, validate_frame


def check_router_frame(frame: pd.DataFrame) -> list[QualityResult]:
    """Unique queries, known splits and labels, scores in [0, 1], positive weights."""
    expect = gx.expectations
    modes = [mode.value for mode in MODES]
    expectations = {
        "query_ids_unique": (
            "no query appears twice (it would count twice in training and in the gate)",
            expect.ExpectColumnValuesToBeUnique(column="query_id"),
        ),
        "split_known": (
            "every query is in the train or the dev split",
            expect.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "dev"]),
        ),
        "label_is_a_mode": (
            f"every label is one of {modes}",
            expect.ExpectColumnValuesToBeInSet(column="label", value_set=modes),
        ),
        "weight_positive": (
            "every query weighs more than nothing",
            expect.ExpectColumnValuesToBeBetween(column="weight", min_value=0, strict_min=True),
        ),
    }
    for mode in modes:
        expectations[f"ndcg_{mode}_in_range"] = (
            f"nDCG@10 of {mode} is between 0 and 1",
            expect.ExpectColumnValuesToBeBetween(column=f"ndcg_{mode}", min_value=0, max_value=1),
        )
    return validate_frame(frame, expectations, id_columns=["query_id"])


def check_pairs_frame(frame: pd.DataFrame) -> list[QualityResult]:
    """Text on both sides, known splits, each (query, document) once, each query in one split."""
    expect = gx.expectations
    splits_per_query = frame.groupby("query_id")["split"].transform("nunique")
    checked = frame.assign(splits_of_query=splits_per_query)
    expectations = {
        "query_not_empty": (
            "every query has text",
            expect.ExpectColumnValueLengthsToBeBetween(column="query", min_value=1),
        ),
        "passage_not_empty": (
            "every passage has text",
            expect.ExpectColumnValueLengthsToBeBetween(column="passage", min_value=1),
        ),
        "split_known": (
            "every pair is in the train or the dev split",
            expect.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "dev"]),
        ),
        "pairs_unique": (
            "no (query, document) pair appears twice",
            expect.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "doc_id"]),
        ),
        "query_in_one_split": (
            "no query is in both splits (the gate would score what training saw)",
            expect.ExpectColumnValuesToBeInSet(column="splits_of_query", value_set=[1]),
        ),
    }
    return validate_frame(checked, expectations, id_columns=["query_id", "doc_id"])
