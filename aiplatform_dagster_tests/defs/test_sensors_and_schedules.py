"""The document sensor: one run per change, keys that never repeat, failed changes retried."""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.ingestion.schedules import nightly_full_refresh
from aiplatform_dagster.defs.ingestion.sensors import MAX_ATTEMPTS, new_documents_sensor
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag.ingest.source_folder import snapshot_folder
from aiplatform_dagster_tests.conftest import write_corpus

Status = dg.DagsterRunStatus


def documents_at(folder: Path) -> PlatformResource:
    return PlatformResource(overrides={"paths": {"documents_dir": str(folder)}})


class Sensor:
    """Ticks the real sensor against a real instance and plays the daemon's part in runs."""

    def __init__(self, instance: dg.DagsterInstance, folder: Path) -> None:
        self.instance = instance
        self.folder = folder
        self.cursor: str | None = None
        self.job = load_definitions().resolve_job_def("ingestion_job")

    def tick(self) -> tuple[list[dg.RunRequest], str | None]:
        """Evaluate once; return the run requests and the skip message (if any)."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            sensor_name="new_documents_sensor",
            resources={"platform": documents_at(self.folder)},
        )
        result = new_documents_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], result.skip_message
        self.cursor = result.cursor or self.cursor
        skip = result.skip_reason.skip_message if result.skip_reason else None
        return list(result.run_requests or []), skip

    def launch(self, request: dg.RunRequest, status: dg.DagsterRunStatus) -> dg.DagsterRun:
        """Create the run the daemon would create for ``request``, left in ``status``."""
        tags = {
            **request.tags,
            "dagster/run_key": request.run_key,
            "dagster/sensor_name": "new_documents_sensor",
        }
        return self.instance.create_run_for_job(self.job, tags=tags, status=status)

    def tick_one(self) -> dg.RunRequest:
        requests, skip = self.tick()
        assert len(requests) == 1, skip
        return requests[0]


@pytest.fixture
def sensor(corpus_dir: Path) -> Iterator[Sensor]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield Sensor(instance, corpus_dir)


def touch_later(path: Path) -> None:
    """Move the modification time on, as an edit a second later would."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_each_change_requests_one_run(sensor: Sensor, corpus_dir: Path) -> None:
    first = sensor.tick_one()
    assert first.tags["aiplatform/changes"] == "3 added, 0 changed, 0 removed"
    sensor.launch(first, Status.SUCCESS)
    assert sensor.tick() == ([], f"No changes under {corpus_dir}")

    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    added = sensor.tick_one()
    assert added.tags["aiplatform/changes"] == "1 added, 0 changed, 0 removed"
    sensor.launch(added, Status.SUCCESS)

    changed = corpus_dir / "guides/embeddings.txt"
    changed.write_text(changed.read_text() + "\nEdited.")
    touch_later(changed)
    edited = sensor.tick_one()
    assert edited.tags["aiplatform/changes"] == "0 added, 1 changed, 0 removed"
    sensor.launch(edited, Status.SUCCESS)

    (corpus_dir / "runbooks/paging.md").unlink()
    removed = sensor.tick_one()
    assert removed.tags["aiplatform/changes"] == "0 added, 0 changed, 1 removed"
    sensor.launch(removed, Status.SUCCESS)
    assert sensor.tick()[0] == []


def test_adding_then_deleting_a_file_gets_a_new_run_key(sensor: Sensor, corpus_dir: Path) -> None:
    """The folder returns to an earlier state: Dagster must not de-duplicate the removal."""
    keys = []
    for change in ("initial", "add", "delete"):
        if change == "add":
            write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
        if change == "delete":
            (corpus_dir / "guides/new.md").unlink()
        request = sensor.tick_one()
        sensor.launch(request, Status.SUCCESS)
        keys.append(request.run_key)
    assert len(set(keys)) == 3, keys


def test_no_new_request_while_the_last_run_is_going(sensor: Sensor, corpus_dir: Path) -> None:
    run = sensor.launch(sensor.tick_one(), Status.STARTED)
    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    requests, skip = sensor.tick()
    assert requests == []
    assert run.run_id in skip and "STARTED" in skip

    sensor.instance.report_run_failed(run)
    retry = sensor.tick_one()
    assert retry.tags["aiplatform/changes"] == "4 added, 0 changed, 0 removed"


@pytest.mark.parametrize("status", [Status.FAILURE, Status.CANCELED])
def test_a_change_a_run_did_not_ingest_is_requested_again(
    sensor: Sensor, corpus_dir: Path, status: dg.DagsterRunStatus
) -> None:
    sensor.launch(sensor.tick_one(), Status.SUCCESS)
    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    failed = sensor.tick_one()
    sensor.launch(failed, status)

    retry = sensor.tick_one()
    assert retry.run_key != failed.run_key
    assert retry.tags["aiplatform/changes"] == "1 added, 0 changed, 0 removed"
    assert retry.tags["aiplatform/attempt"] == "2"

    sensor.launch(retry, status)
    write_corpus(corpus_dir, {"guides/other.md": "# Other\n\nAnother document."})
    both = sensor.tick_one()
    assert both.tags["aiplatform/changes"] == "2 added, 0 changed, 0 removed"
    assert both.tags["aiplatform/attempt"] == "1"


def test_retries_stop_after_repeated_failures_until_the_folder_changes(
    sensor: Sensor, corpus_dir: Path
) -> None:
    for _ in range(MAX_ATTEMPTS):
        last = sensor.launch(sensor.tick_one(), Status.FAILURE)
    requests, skip = sensor.tick()
    assert requests == []
    assert f"failed {MAX_ATTEMPTS} times" in skip and last.run_id in skip

    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFixed."})
    assert sensor.tick_one().tags["aiplatform/changes"] == "4 added, 0 changed, 0 removed"


def test_a_cursor_from_the_previous_version_counts_as_ingested(
    sensor: Sensor, corpus_dir: Path
) -> None:
    """The old cursor was the plain snapshot; upgrading must not re-ingest or crash."""
    sensor.cursor = json.dumps(snapshot_folder(corpus_dir))
    assert sensor.tick()[0] == []


def test_missing_folder_skips_with_a_reason(tmp_path: Path) -> None:
    context = dg.build_sensor_context(resources={"platform": documents_at(tmp_path / "gone")})
    result = new_documents_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert "does not exist" in result.skip_message


def test_nightly_refresh_runs_the_ingestion_job_without_reusing_vectors() -> None:
    assert nightly_full_refresh.cron_schedule == "0 2 * * *"
    assert nightly_full_refresh.job_name == "ingestion_job"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    [request] = nightly_full_refresh.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["document_chunks"]["config"]["reuse_previous"] is False
