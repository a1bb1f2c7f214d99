"""The golden reference: the shipped questions through the real query path, frozen per release."""

from pathlib import Path

from aiplatform_dagster.monitoring.features import QueryRecord
from aiplatform_dagster.monitoring.reference import (
    frozen_golden_reference,
    golden_questions,
    golden_records,
)
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster_tests.stand_ins import HashEmbedder, text_vector


def test_golden_questions_are_the_shipped_sets() -> None:
    questions = golden_questions()
    assert len(questions) == 55
    assert questions[0] == "AIP-4031"
    assert questions[-1].endswith("?")


def test_golden_reference_is_built_once_per_release(engine: QueryEngine, tmp_path: Path) -> None:
    built: list[list[QueryRecord]] = []

    def build() -> list[QueryRecord]:
        built.append(golden_records(engine, HashEmbedder().encode, golden_questions()))
        return built[-1]

    first = frozen_golden_reference(tmp_path, "r1", build)
    again = frozen_golden_reference(tmp_path, "r1", build)
    assert len(built) == 1 and len(first) == 55
    assert first.equals(again)
    assert set(first["route"]) == {"bm25", "hybrid", "dense"}
    assert (first["embedding"][0] == text_vector("AIP-4031")).all()
    frozen_golden_reference(tmp_path, "r2", build)
    assert len(built) == 2
