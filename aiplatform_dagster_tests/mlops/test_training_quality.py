"""The Great Expectations suites on training data name the rows that break them."""

import pandas as pd

from aiplatform_dagster.mlops.training_quality import check_pairs_frame


def pairs(**changes: list) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "query_id": ["q1", "q2", "q3"],
            "query": ["what is zorvak", "mibelt guide", "help with brenza"],
            "doc_id": ["d1", "d2", "d3"],
            "passage": ["Restarting payments.", "Rotating passwords.", "Resetting tokens."],
            "split": ["train", "train", "dev"],
        }
    )
    return frame.assign(**changes)


def failed(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {r.name: r.unexpected_examples for r in check_pairs_frame(frame) if not r.success}


def test_clean_pairs_pass() -> None:
    assert failed(pairs()) == {}


def test_a_query_in_both_splits_an_empty_passage_and_a_repeated_pair_are_named() -> None:
    leaking = pairs(
        query_id=["q1", "q1", "q3"], doc_id=["d1", "d2", "d3"], split=["train", "dev", "dev"]
    )
    assert set(failed(leaking)) == {"query_in_one_split"}
    assert "q1" in str(failed(leaking)["query_in_one_split"])
    assert set(failed(pairs(passage=["", "x", "y"]))) == {"passage_not_empty"}
    assert set(failed(pairs(query_id=["q1", "q1", "q3"], doc_id=["d1", "d1", "d3"]))) == {
        "pairs_unique"
    }
