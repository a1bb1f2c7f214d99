"""Re-ingest when the document folder changes."""

import hashlib
import json

import dagster as dg

from aiplatform_dagster.defs.ingestion.jobs import ingestion_job
from aiplatform_dagster.defs.resources import DocumentSourceResource
from aiplatform_dagster.rag.ingest.source_folder import diff_snapshots, snapshot_folder


@dg.sensor(
    job=ingestion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_documents_sensor(
    context: dg.SensorEvaluationContext, documents: DocumentSourceResource
) -> dg.SensorResult | dg.SkipReason:
    """Requests an ingestion run when files are added, changed or removed.

    The cursor is the folder snapshot (modification time and size per file) the last run
    request saw, so each change is picked up exactly once.
    """
    if not documents.path.is_dir():
        return dg.SkipReason(f"Document folder {documents.folder} does not exist")
    previous = json.loads(context.cursor) if context.cursor else {}
    current = snapshot_folder(documents.path)
    changes = diff_snapshots(previous, current)
    if not changes:
        return dg.SkipReason(f"No changes under {documents.folder}")
    cursor = json.dumps(current, sort_keys=True)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=hashlib.sha256(cursor.encode()).hexdigest()[:16],
                tags={
                    "aiplatform/trigger": "new_documents_sensor",
                    "aiplatform/changes": changes.summary(),
                },
            )
        ],
        cursor=cursor,
    )
