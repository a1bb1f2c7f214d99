"""The document sensor requests exactly one run per change; the schedule refreshes fully."""

import json
import os
from pathlib import Path

import dagster as dg

from aiplatform_dagster.defs.ingestion.schedules import nightly_full_refresh
from aiplatform_dagster.defs.ingestion.sensors import new_documents_sensor
from aiplatform_dagster.defs.resources import DocumentSourceResource
from aiplatform_dagster_tests.conftest import write_corpus


def tick(folder: Path, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"documents": DocumentSourceResource(folder=str(folder))}
    )
    result = new_documents_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor
    return list(result.run_requests or []), result.cursor


def test_each_change_requests_one_run_and_advances_the_cursor(corpus_dir: Path) -> None:
    run_keys = []
    requests, cursor = tick(corpus_dir, None)
    run_keys += [r.run_key for r in requests]
    assert len(requests) == 1
    assert requests[0].tags["aiplatform/changes"] == "3 added, 0 changed, 0 removed"
    assert set(json.loads(cursor)) == {
        "runbooks/paging.md",
        "guides/embeddings.txt",
        "guides/bm25.html",
    }

    assert tick(corpus_dir, cursor) == ([], cursor)

    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    requests, cursor_after_add = tick(corpus_dir, cursor)
    run_keys += [r.run_key for r in requests]
    assert [r.tags["aiplatform/changes"] for r in requests] == ["1 added, 0 changed, 0 removed"]
    assert cursor_after_add != cursor

    changed = corpus_dir / "guides/embeddings.txt"
    changed.write_text(changed.read_text() + "\nEdited.")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    requests, cursor_after_change = tick(corpus_dir, cursor_after_add)
    run_keys += [r.run_key for r in requests]
    assert [r.tags["aiplatform/changes"] for r in requests] == ["0 added, 1 changed, 0 removed"]

    (corpus_dir / "runbooks/paging.md").unlink()
    requests, cursor_after_remove = tick(corpus_dir, cursor_after_change)
    run_keys += [r.run_key for r in requests]
    assert [r.tags["aiplatform/changes"] for r in requests] == ["0 added, 0 changed, 1 removed"]
    assert "runbooks/paging.md" not in json.loads(cursor_after_remove)

    assert len(set(run_keys)) == 4, "each change set gets its own run key"
    assert tick(corpus_dir, cursor_after_remove) == ([], cursor_after_remove)


def test_missing_folder_skips_with_a_reason(tmp_path: Path) -> None:
    context = dg.build_sensor_context(
        resources={"documents": DocumentSourceResource(folder=str(tmp_path / "gone"))}
    )
    result = new_documents_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert "does not exist" in result.skip_message


def test_nightly_refresh_runs_the_ingestion_job_without_reusing_vectors() -> None:
    assert nightly_full_refresh.cron_schedule == "0 2 * * *"
    assert nightly_full_refresh.job_name == "ingestion_job"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    [request] = nightly_full_refresh.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["chunk_embeddings"]["config"]["reuse_previous"] is False
