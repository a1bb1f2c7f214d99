"""query_drift_report materialised in-process on synthetic days of the query log."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aiplatform_dagster.defs.monitoring.assets import query_drift_report
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster_tests.monitoring.synthetic import log_traffic, traffic

REFERENCE = {"reference_start": "2026-11-20", "reference_end": "2026-11-21"}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference day, a quiet day, a steady day, a shifted day; 2026-11-29 stays empty."""
    root = tmp_path_factory.mktemp("monitoring")
    log_traffic(root, traffic("2026-11-20", 400, seed=1))
    log_traffic(root, traffic("2026-12-01", 300, seed=2))
    log_traffic(root, traffic("2026-12-02", 300, shifted=True, seed=3))
    log_traffic(root, traffic("2026-11-30", 10, seed=4))
    return root


def materialise(storage: Path, day: str, config: dict[str, Any]) -> dict[str, Any]:
    result = dg.materialize(
        [query_drift_report],
        partition_key=day,
        resources={
            "platform": PlatformResource(overrides={"paths": {"storage_dir": str(storage)}})
        },
        run_config={"ops": {"query_drift_report": {"config": config}}},
    )
    (event,) = result.asset_materializations_for_node("query_drift_report")
    return {key: value.value for key, value in event.metadata.items()}


def test_a_steady_day_does_not_drift(storage: Path) -> None:
    metadata = materialise(storage, "2026-12-01", REFERENCE)
    assert metadata["status"] == "compared"
    assert metadata["drifted"] is False
    assert (metadata["window_queries"], metadata["reference_queries"]) == (300, 400)
    assert metadata["drifted_features"] == "none"
    assert "| question_words | numeric |" in metadata["features"]
    assert metadata["reference"] == "query log 2026-11-20 to 2026-11-21 (exclusive)"
    report = json.loads(Path(metadata["report"]).read_text())
    assert report["drifted"] is False and report["current_count"] == 300
    assert Path(metadata["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata["plot_preview"].startswith("![drift](data:image/png;base64,")


def test_a_shifted_day_drifts(storage: Path) -> None:
    metadata = materialise(storage, "2026-12-02", REFERENCE)
    assert metadata["drifted"] is True
    assert {"question_words", "top_score", "route", "embedding"} <= set(
        metadata["drifted_features"].split(", ")
    )
    assert metadata["psi/question_words"] > 0.2
    report = json.loads((storage / "monitoring" / "reports" / "2026-12-02.json").read_text())
    assert report["drifted"] is True
    assert report["window_start"] == "2026-12-02T00:00:00+00:00"


def test_an_empty_day_materialises_without_scores(storage: Path) -> None:
    metadata = materialise(storage, "2026-11-29", REFERENCE)
    assert metadata["status"] == "no queries"
    assert metadata["drifted"] is False and metadata["window_queries"] == 0
    assert not any(key.startswith("psi/") for key in metadata)
    assert "features" not in metadata and "plot" not in metadata
    assert json.loads(Path(metadata["report"]).read_text())["status"] == "no queries"


def test_a_quiet_day_is_too_few_queries(storage: Path) -> None:
    metadata = materialise(storage, "2026-11-30", REFERENCE)
    assert (metadata["status"], metadata["drifted"]) == ("too few queries", False)


def test_without_a_release_or_period_there_is_no_reference(storage: Path) -> None:
    metadata = materialise(storage, "2026-12-02", {})
    assert (metadata["status"], metadata["drifted"]) == ("no reference", False)
    assert "materialise the ingestion group" in metadata["reference"]


def test_a_half_reference_period_fails_with_the_fix(storage: Path) -> None:
    with pytest.raises(dg.Failure, match="Set both reference_start and reference_end"):
        materialise(storage, "2026-12-02", {"reference_start": "2026-11-20"})


@pytest.mark.slow
def test_without_a_period_the_golden_questions_are_the_frozen_reference(
    sample_repository: IndexRepository,
) -> None:
    """The real path: MiniLM answers the 55 golden questions on the sample release, once."""
    storage = sample_repository.root.parent
    log_traffic(storage, traffic("2026-12-01", 60, seed=5, dim=384))
    first = materialise(storage, "2026-12-01", {})
    release = sample_repository.pointer()
    assert first["status"] == "compared"
    assert first["reference"] == f"golden questions on release {release}"
    assert first["reference_queries"] == 55
    frozen = storage / "monitoring" / "reference" / f"golden-{release}.parquet"
    written = frozen.stat().st_mtime_ns
    again = materialise(storage, "2026-12-01", {})
    assert frozen.stat().st_mtime_ns == written
    assert {k: v for k, v in again.items() if k.startswith("psi/")} == {
        k: v for k, v in first.items() if k.startswith("psi/")
    }
