"""Recording answers of the real query path: features, embeddings, and never a failed query."""

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.monitoring.features import features_of
from aiplatform_dagster.monitoring.postgres_log import PostgresQueryLog
from aiplatform_dagster.monitoring.query_log import ParquetQueryLog
from aiplatform_dagster.monitoring.recorder import QueryRecorder, start_recorder
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster_tests.stand_ins import HashEmbedder, text_vector

QUESTIONS = (
    "AIP-4031",
    "what does document 3 say",
    "which documents say v1 things about anything at all in this small corpus of ours today",
)


def today() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(minutes=1)


def test_features_come_from_the_answer(engine: QueryEngine) -> None:
    answer = engine.ask("Что говорит document 3 о версии v1?", QueryOptions(top_n=3))
    now = datetime.now(UTC)
    record = features_of(answer, np.ones((1, 4)), now)
    scores = sorted((source["score"] for source in answer.sources), reverse=True)
    assert len(scores) >= 2
    assert (record.question_words, record.question_chars) == (7, len(answer.question))
    assert record.script == "cyrillic"
    assert record.route == answer.route.mode.value
    assert record.top_score == scores[0]
    assert record.score_margin == pytest.approx(scores[0] - scores[1])
    assert record.latency_ms == answer.total_ms
    assert record.embedding.shape == (4,) and record.embedding.dtype == np.float32


def test_recorded_answers_reach_the_log_with_their_embeddings(
    engine: QueryEngine, tmp_path: Path
) -> None:
    log = ParquetQueryLog(tmp_path)
    recorder = QueryRecorder(log, HashEmbedder().encode, flush_interval_s=60)
    answers = [engine.ask(question) for question in QUESTIONS]
    given = np.full(16, 0.25, dtype=np.float32)
    for answer in answers[:2]:
        recorder.record(answer)
    recorder.record(answers[2], embedding=given)
    recorder.close()
    frame = log.read(*today())
    assert list(frame["route"]) == [answer.route.mode.value for answer in answers]
    assert answers[0].route.mode == SearchMode.BM25
    np.testing.assert_array_equal(frame["embedding"][0], text_vector(answers[0].question))
    np.testing.assert_array_equal(frame["embedding"][2], given)


def test_record_returns_at_once_and_drops_past_a_full_queue(
    engine: QueryEngine, tmp_path: Path
) -> None:
    """The worker is held inside the embedder: answers queue, the queue's bound drops one."""
    entered, release = threading.Event(), threading.Event()

    def slow_embed(texts: Sequence[str]) -> np.ndarray:
        entered.set()
        release.wait(10)
        return HashEmbedder().encode(texts)

    log = ParquetQueryLog(tmp_path)
    recorder = QueryRecorder(log, slow_embed, queue_size=1, flush_interval_s=60)
    answer = engine.ask(QUESTIONS[1])
    recorder.record(answer)
    assert entered.wait(10)
    recorder.record(answer)
    recorder.record(answer)
    assert recorder.dropped == 1
    release.set()
    recorder.close()
    assert len(log.read(*today())) == 2


def test_a_database_outage_costs_a_warning_not_a_query(
    engine: QueryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    log = PostgresQueryLog("postgresql://postgres@127.0.0.1:1/none", max_buffer=2)
    recorder = QueryRecorder(log, HashEmbedder().encode)
    with caplog.at_level(logging.WARNING):
        for question in QUESTIONS:
            recorder.record(engine.ask(question))
        recorder.close()
    assert "query log: flush failed" in caplog.text
    assert "127.0.0.1" in caplog.text
    assert (log.buffered, log.dropped) == (2, 1)


def test_start_recorder_follows_the_settings(tmp_path: Path) -> None:
    off = load_settings({"AIPLATFORM_MONITORING_QUERY_LOG": "false"})
    assert start_recorder(off, None) is None
    recorder = start_recorder(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}), None)
    assert recorder is not None
    assert recorder.log.root == tmp_path / "monitoring" / "query_log"
    recorder.close()
