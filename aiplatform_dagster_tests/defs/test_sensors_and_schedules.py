"""The document sensor: one run per change, keys that never repeat, failed changes retried."""

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.ingestion.schedules import nightly_full_refresh
from aiplatform_dagster.defs.ingestion.sensors import MAX_ATTEMPTS, new_documents_sensor
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.source_folder import snapshot_folder
from aiplatform_dagster_tests.conftest import SMALL_CORPUS, write_corpus
from aiplatform_dagster_tests.stand_ins import build_release

Status = dg.DagsterRunStatus


def platform_at(folder: Path, storage: Path) -> PlatformResource:
    return PlatformResource(
        overrides={"paths": {"documents_dir": str(folder), "storage_dir": str(storage)}}
    )


def publish(storage: Path, corpus: dict[str, str]) -> str:
    """Make a release of ``corpus`` current under ``storage``, as an earlier build would."""
    repository = IndexRepository(storage / "ingestion")
    release = build_release(repository, corpus)
    repository.move_pointer(release.release_id, expected=repository.pointer())
    return release.release_id


class Sensor:
    """Ticks the real sensor against a real instance and plays the daemon's part in runs."""

    def __init__(self, instance: dg.DagsterInstance, folder: Path, storage: Path) -> None:
        self.instance = instance
        self.folder = folder
        self.storage = storage
        self.cursor: str | None = None
        self.job = load_definitions().resolve_job_def("ingestion_job")

    def tick(self) -> tuple[list[dg.RunRequest], str | None]:
        """Evaluate once; return the run requests and the skip message (if any)."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            sensor_name="new_documents_sensor",
            resources={"platform": platform_at(self.folder, self.storage)},
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
def sensor(corpus_dir: Path, tmp_path: Path) -> Iterator[Sensor]:
    """The sensor on ``corpus_dir``, with a current release that holds none of its files."""
    publish(tmp_path / "storage", {"older.md": "An older corpus."})
    with dg.DagsterInstance.ephemeral() as instance:
        yield Sensor(instance, corpus_dir, tmp_path / "storage")


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


def test_the_first_release_is_never_the_sensors_to_make(corpus_dir: Path, tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        requests, skip = Sensor(instance, corpus_dir, tmp_path / "empty").tick()
    assert requests == []
    assert "No index release" in skip and "Materialize all" in skip


def test_a_build_started_from_the_ui_holds_back_the_sensor(
    sensor: Sensor, corpus_dir: Path
) -> None:
    """Materialize all in the UI launches the asset job, not ingestion_job: still a build."""
    asset_job = load_definitions().resolve_implicit_global_asset_job_def()
    selection = frozenset(asset_job.asset_layer.executable_asset_keys)
    ui_run = sensor.instance.create_run_for_job(
        asset_job, asset_selection=selection, status=Status.STARTED
    )
    requests, skip = sensor.tick()
    assert requests == [] and ui_run.run_id in skip

    sensor.instance.report_run_failed(ui_run)
    assert sensor.tick_one().tags["aiplatform/changes"] == "3 added, 0 changed, 0 removed"


def test_a_folder_the_current_release_already_holds_requests_no_run(
    sensor: Sensor, corpus_dir: Path
) -> None:
    """After a run from the UI (or make ingest) the sensor adopts the folder, not rebuilds it."""
    write_corpus(corpus_dir, {"notes/empty.md": ""})  # skipped by ingestion, so never held
    release_id = publish(sensor.storage, SMALL_CORPUS)
    requests, skip = sensor.tick()
    assert requests == [] and release_id in skip and "already holds" in skip

    touch_later(corpus_dir / "guides/bm25.html")
    assert sensor.tick() == ([], skip)

    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    assert sensor.tick_one().tags["aiplatform/changes"] == "1 added, 0 changed, 0 removed"


def test_an_edit_the_current_release_lacks_is_requested(sensor: Sensor, corpus_dir: Path) -> None:
    publish(sensor.storage, {**SMALL_CORPUS, "runbooks/paging.md": "An older paging policy."})
    assert sensor.tick_one().tags["aiplatform/changes"] == "3 added, 0 changed, 0 removed"


@pytest.mark.parametrize("version", ["plain snapshot", "snapshots inline"])
def test_a_cursor_from_an_earlier_version_counts_as_ingested(
    sensor: Sensor, corpus_dir: Path, version: str
) -> None:
    """Earlier cursors held whole snapshots; upgrading must not re-ingest or crash."""
    snapshot = snapshot_folder(corpus_dir)
    if version == "plain snapshot":
        sensor.cursor = json.dumps(snapshot)
    else:
        requested = {"run_key": "1-abc", "snapshot": snapshot, "attempt": 1}
        sensor.cursor = json.dumps({"seq": 1, "ingested": {}, "requested": requested})
        sensor.launch(dg.RunRequest(run_key="1-abc"), Status.SUCCESS)
    assert sensor.tick()[0] == []
    write_corpus(corpus_dir, {"guides/new.md": "# New\n\nFresh document."})
    assert sensor.tick_one().tags["aiplatform/changes"] == "1 added, 0 changed, 0 removed"


def test_the_cursor_stays_small_however_many_files_the_folder_holds(
    sensor: Sensor, corpus_dir: Path
) -> None:
    """Dagster stores the cursor with every tick: it holds digests, the snapshots are files."""
    write_corpus(corpus_dir, {f"bulk/note-{i:04}.md": f"Note {i}." for i in range(2_000)})
    sensor.launch(sensor.tick_one(), Status.SUCCESS)
    for i in range(3):
        write_corpus(corpus_dir, {f"guides/new-{i}.md": "# New\n\nFresh document."})
        sensor.launch(sensor.tick_one(), Status.SUCCESS)
    assert sensor.tick()[0] == []
    assert len(sensor.cursor) < 300, sensor.cursor
    stored = list((sensor.storage / "sensors" / "new_documents_sensor").glob("*.json"))
    assert len(stored) == 1, "snapshots the cursor no longer names are deleted"


def test_lost_snapshots_fall_back_to_the_current_release(sensor: Sensor, corpus_dir: Path) -> None:
    """A replaced storage folder loses the snapshots: what the release holds decides."""
    sensor.launch(sensor.tick_one(), Status.SUCCESS)
    assert sensor.tick()[0] == []
    shutil.rmtree(sensor.storage / "sensors")
    publish(sensor.storage, SMALL_CORPUS)
    requests, skip = sensor.tick()
    assert requests == [] and "already holds" in skip

    shutil.rmtree(sensor.storage / "sensors")
    publish(sensor.storage, {"older.md": "An older corpus."})
    assert sensor.tick_one().tags["aiplatform/changes"] == "3 added, 0 changed, 0 removed"


def test_missing_folder_skips_with_a_reason(tmp_path: Path) -> None:
    platform = platform_at(tmp_path / "gone", tmp_path / "storage")
    context = dg.build_sensor_context(resources={"platform": platform})
    result = new_documents_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert "does not exist" in result.skip_message


def test_nightly_refresh_runs_the_ingestion_job_without_reusing_vectors() -> None:
    assert nightly_full_refresh.cron_schedule == "0 2 * * *"
    assert nightly_full_refresh.job_name == "ingestion_job"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    [request] = nightly_full_refresh.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["document_chunks"]["config"]["reuse_previous"] is False
