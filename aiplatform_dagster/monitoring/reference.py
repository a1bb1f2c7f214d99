"""What a window of queries is compared with.

Once real traffic has been logged, the reference is the query log over a period the operator
names (the traffic the current models were trained and validated on): the log is append-only,
so the same period always reads the same rows. Until then it is the platform's golden questions
(the 40 retrieval queries and 15 answer questions of ``evaluation/golden/``) answered by the
real query path over the current index release. Their scores depend on the release and their
latency on the moment, so the first result for a release is frozen in
``<storage>/monitoring/reference/golden-<release id>.parquet`` and every later report for that
release reads the same rows. Fifty-five curated questions are a coarse picture of real traffic:
use them to catch gross shifts, and name a reference period as soon as the log has one.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiplatform_dagster.evaluation.answer_eval import load_golden_answers
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.monitoring.features import Embed, QueryRecord, features_of
from aiplatform_dagster.monitoring.query_log import records_table, schema, write_parquet
from aiplatform_dagster.rag.query.engine import QueryEngine

if TYPE_CHECKING:
    import pandas as pd


def golden_questions() -> list[str]:
    """The shipped golden retrieval queries, then the golden answer questions, in file order."""
    queries, _ = load_judged_queries(GOLDEN_DIR)
    return [*queries.values(), *(answer.question for answer in load_golden_answers())]


def golden_records(
    engine: QueryEngine, embed: Embed, questions: Sequence[str]
) -> list[QueryRecord]:
    """``questions`` answered by ``engine`` and recorded as the query log would record them."""
    answers = [engine.ask(question) for question in questions]
    vectors = embed([answer.question for answer in answers])
    now = datetime.now(UTC)
    return [
        features_of(answer, vector, now) for answer, vector in zip(answers, vectors, strict=True)
    ]


def frozen_golden_reference(
    folder: Path, release_id: str, build: Callable[[], list[QueryRecord]]
) -> "pd.DataFrame":
    """The golden reference of ``release_id``: built once by ``build``, then read back."""
    import pyarrow.parquet as pq

    path = Path(folder) / f"golden-{release_id}.parquet"
    if not path.exists():
        write_parquet(records_table(build()), path)
    return pq.read_table(path, schema=schema()).to_pandas()
