"""Human labelling in Dagster: the queue of answers waiting for a labeller, refreshed by a
sensor when the API flags an answer or a user sends feedback."""

import hashlib

import dagster as dg

from aiplatform_dagster.defs.compute import CPU_SMALL, on_profile
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.serving.feedback import open_feedback_store

GROUP = "evaluation"
OWNERS = ["team:ml-platform"]


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python"},
    code_version="1",
    **on_profile(CPU_SMALL),
)
def labelling_queue(platform: PlatformResource) -> dg.MaterializeResult:
    """Answers waiting for a human label: those the API flagged as low confidence (nothing
    matched, no citation, the LLM failed) and those users rated 2 or less or marked critical.

    Label one with `POST /v1/feedback` and a `corrected_answer`: it leaves the queue and
    becomes a reference answer in answer_eval, beside the golden set.
    """
    store = open_feedback_store(platform.settings())
    queue, labels, rating = store.queue(), store.labels(), store.mean_rating()
    rows = [
        {"request_id": i.request_id, "since": i.at[:19], "reason": i.reason,
         "question": i.question, "answer": i.answer}
        for i in queue
    ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "waiting": len(queue),
            "labelled": len(labels),
            "mean_user_rating": dg.MetadataValue.float(round(rating, 3) if rating else 0.0),
            "feedback": len(store.feedback()),
            "queue": markdown_table(rows, limit=50),
            "path": dg.MetadataValue.path(str(store.root)),
        }
    )


def labelling_digest(flagged: int, feedback: int) -> str:
    return hashlib.sha256(f"{flagged}:{feedback}".encode()).hexdigest()[:16]


@dg.sensor(
    name="labelling_queue_sensor",
    target=labelling_queue,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 60 s: refreshes labelling_queue when the API flags an answer or a user "
    "sends feedback.",
)
def labelling_queue_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    store = open_feedback_store(platform.settings())
    digest = labelling_digest(len(store.flagged()), len(store.feedback()))
    if digest == (context.cursor or labelling_digest(0, 0)):
        return dg.SkipReason("No new flagged answer or feedback")
    return dg.SensorResult(run_requests=[dg.RunRequest()], cursor=digest)
