"""Re-ingest when the document folder changes, and again when a run did not ingest a change.

The sensor keeps an index release up to date; it never makes the first one (a first build of a
folder is deliberate: ``make ingest``, ``make dev`` or *Materialize all*), and it never starts a
build while another run is building one, whoever started it.
"""

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import dagster as dg

from aiplatform_dagster.defs.ingestion.assets import current_release
from aiplatform_dagster.defs.ingestion.builds import PLAN_TAG, SCALE_OUT_TAG
from aiplatform_dagster.defs.ingestion.jobs import ingestion_job
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag.index.releases import CURRENT
from aiplatform_dagster.rag.index.segments import CorruptIndexError
from aiplatform_dagster.rag.ingest.source_folder import (
    SnapshotStore,
    already_ingested,
    diff_snapshots,
    snapshot_folder,
)

SENSOR_NAME = "new_documents_sensor"
MAX_ATTEMPTS = 3
"""Runs requested for one folder state; after that the sensor waits for the folder to change."""

# The tags Dagster puts on every run a sensor requests (dagster._core.storage.tags).
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class Requested:
    """The last run requested: its key, the folder state it ingests, and which try it is."""

    run_key: str
    snapshot: str
    attempt: int


@dataclass(frozen=True)
class DocumentsCursor:
    """What is known to be ingested, and the request whose outcome is still to be seen.

    Folder states are digests of snapshots kept in a ``SnapshotStore``, so the cursor stays a
    few hundred bytes however many files the folder holds. ``seq`` counts requests, so run
    keys never repeat even when the folder returns to an earlier state (a repeated key would
    make Dagster drop the run).
    """

    seq: int = 0
    ingested: str | None = None
    requested: Requested | None = None

    @classmethod
    def parse(cls, text: str | None, store: SnapshotStore) -> "DocumentsCursor":
        """Read a cursor; earlier versions held whole snapshots, which are moved to ``store``."""
        if not text:
            return cls()
        data = json.loads(text)
        if "seq" not in data:  # the first version: the plain snapshot requested
            return cls(ingested=store.save(data))
        requested = data["requested"]
        if requested:
            requested = Requested(
                **{**requested, "snapshot": _digest(requested["snapshot"], store)}
            )
        return cls(data["seq"], _digest(data["ingested"], store), requested)

    def dump(self, store: SnapshotStore) -> str:
        """The cursor text; snapshots it no longer names are deleted from ``store``."""
        store.keep(d for d in (self.ingested, self.requested and self.requested.snapshot) if d)
        return json.dumps(asdict(self), sort_keys=True)


def _digest(state: Any, store: SnapshotStore) -> str | None:
    """A cursor's folder state as a digest (the second version held the snapshot itself)."""
    return store.save(state) if isinstance(state, dict) else state


@dg.sensor(
    name=SENSOR_NAME,
    job=ingestion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: one ingestion_job run per change to the documents folder (files "
    "added, edited or removed), retried up to 3 times if it fails. Waits while any build runs; "
    "never makes the first release.",
)
def new_documents_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    """Requests an ingestion run when files are added, changed or removed.

    The cursor moves to a folder state only once a run ingesting it succeeded, or once the
    current release is found to hold it already (a run started from the UI). While any build
    is queued or running nothing new is requested; a failed or canceled run's change is
    requested again (with anything changed since), up to MAX_ATTEMPTS times.
    """
    settings = platform.settings()
    folder = settings.paths.documents_dir
    if not folder.is_dir():
        return dg.SkipReason(f"Document folder {folder} does not exist")
    repository = platform.repository()
    release_id = repository.pointer(CURRENT)
    if release_id is None:
        return dg.SkipReason(
            f"No index release under {repository.root} yet: materialise the ingestion group "
            "once (Materialize all, or make ingest); from then on this sensor keeps it current"
        )
    building = _unfinished_build(context.instance)
    if building is not None:
        return dg.SkipReason(
            f"Waiting for run {building.run_id} ({building.status.value}) to finish "
            "before looking for more changes"
        )
    store = SnapshotStore(settings.paths.storage_dir / "sensors" / SENSOR_NAME)
    cursor = DocumentsCursor.parse(context.cursor, store)
    last_run = _requested_run(context.instance, cursor.requested)
    if last_run is not None and last_run.is_success:
        cursor = replace(cursor, ingested=cursor.requested.snapshot, requested=None)
    ingested = store.load(cursor.ingested)
    if ingested is None:
        context.log.warning(f"Snapshot {cursor.ingested} is gone; comparing with the release")
        ingested = {}
    current = snapshot_folder(folder)
    changes = diff_snapshots(ingested, current)
    if not changes:
        return dg.SensorResult(
            skip_reason=f"No changes under {folder}",
            cursor=replace(cursor, requested=None).dump(store),
        )
    state = store.save(current)
    try:
        held = {doc.doc_id: doc.content_hash for doc in repository.open(release_id).documents}
    except CorruptIndexError as error:
        context.log.warning(f"Cannot read the current release, so rebuilding: {error}")
        held = {}
    if already_ingested(folder, changes, current, held, settings.ingest.max_file_bytes):
        return dg.SensorResult(
            skip_reason=f"The current release {release_id} already holds {folder} as it is",
            cursor=replace(cursor, ingested=state, requested=None).dump(store),
        )
    retried = cursor.requested if cursor.requested and cursor.requested.snapshot == state else None
    attempt = retried.attempt + 1 if retried else 1
    if attempt > MAX_ATTEMPTS:
        name = last_run.run_id if last_run else f"with run key {retried.run_key}"
        return dg.SkipReason(
            f"Run {name} failed {MAX_ATTEMPTS} times on this folder state; fix the cause "
            f"its logs show, or change a document under {folder} to try again"
        )
    seq = (cursor.seq or _runs_so_far(context.instance)) + 1
    run_key = f"{seq}-{state[:12]}"
    tags = {
        "aiplatform/trigger": SENSOR_NAME,
        "aiplatform/changes": changes.summary(),
        "aiplatform/attempt": str(attempt),
    }
    if last_run is not None and not last_run.is_success:
        tags["aiplatform/retry_of"] = last_run.run_id
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags=tags)],
        cursor=replace(cursor, seq=seq, requested=Requested(run_key, state, attempt)).dump(store),
    )


def _unfinished_build(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A queued or running run that will move ``current`` (from this sensor, the schedule or
    the UI) or is part of a scale-out build, which a build started now would race."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        selection = run.asset_selection or frozenset()
        if (
            run.job_name == ingestion_job.name
            or current_release.key in selection
            or PLAN_TAG in run.tags
            or SCALE_OUT_TAG in run.tags
        ):
            return run
    return None


def _requested_run(
    instance: dg.DagsterInstance, requested: Requested | None
) -> dg.DagsterRun | None:
    """The run Dagster created for the last request (None when none was, or it was deleted)."""
    if requested is None:
        return None
    tags = {RUN_KEY_TAG: requested.run_key, SENSOR_NAME_TAG: SENSOR_NAME}
    runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=1)
    return runs[0] if runs else None


def _runs_so_far(instance: dg.DagsterInstance) -> int:
    """Where a fresh (or reset) cursor starts counting, so it repeats no earlier run key."""
    return instance.get_runs_count(filters=dg.RunsFilter(tags={SENSOR_NAME_TAG: SENSOR_NAME}))
