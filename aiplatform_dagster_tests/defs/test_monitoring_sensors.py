"""drift_retrain_sensor ticked against a real instance holding real drift reports."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.monitoring.assets import query_drift_report
from aiplatform_dagster.defs.monitoring.schedules import weekly_retrain
from aiplatform_dagster.defs.monitoring.sensors import drift_retrain_sensor
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster_tests.monitoring.synthetic import log_traffic, traffic

REFERENCE = {"reference_start": "2026-11-20", "reference_end": "2026-11-21"}
STEADY, SHIFTED, SHIFTED_AGAIN = "2026-12-01", "2026-12-02", "2026-11-30"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drift-sensor")
    log_traffic(root, traffic("2026-11-20", 300, seed=1))
    log_traffic(root, traffic(STEADY, 200, seed=2))
    log_traffic(root, traffic(SHIFTED, 200, shifted=True, seed=3))
    log_traffic(root, traffic(SHIFTED_AGAIN, 200, shifted=True, seed=4))
    return root


class Drift:
    """Materialises reports into a real instance and ticks the real sensor, keeping its cursor."""

    def __init__(self, instance: dg.DagsterInstance, storage: Path, cooldown_h: float) -> None:
        self.instance = instance
        self.platform = PlatformResource(
            overrides={
                "paths": {"storage_dir": str(storage)},
                "monitoring": {"retrain_cooldown_h": cooldown_h},
            }
        )
        self.cursor: str | None = None

    def report(self, day: str) -> None:
        dg.materialize(
            [query_drift_report],
            partition_key=day,
            instance=self.instance,
            resources={"platform": self.platform},
            run_config={"ops": {"query_drift_report": {"config": REFERENCE}}},
        )

    def tick(self) -> tuple[list[dg.RunRequest], str | None]:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            sensor_name="drift_retrain_sensor",
            resources={"platform": self.platform},
        )
        result = drift_retrain_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], result.skip_message
        self.cursor = result.cursor or self.cursor
        skip = result.skip_reason.skip_message if result.skip_reason else None
        return list(result.run_requests or []), skip


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def test_a_drifted_report_requests_training_once_per_cooldown(
    instance: dg.DagsterInstance, storage: Path
) -> None:
    drift = Drift(instance, storage, cooldown_h=24)
    assert drift.tick() == ([], "No query_drift_report yet: nothing to judge drift by")

    drift.report(STEADY)
    requests, skip = drift.tick()
    assert requests == []
    assert skip == f"The drift report for {STEADY} shows no drift (status: compared)"
    assert drift.tick() == ([], f"No drift report since the one for {STEADY}, already acted on")

    drift.report(SHIFTED)
    (request,) = drift.tick()[0]
    assert request.run_key.startswith(f"drift-{SHIFTED}-")
    assert request.tags["aiplatform/drift_report"] == SHIFTED
    assert "embedding" in request.tags["aiplatform/drifted_features"]

    drift.report(SHIFTED_AGAIN)
    requests, skip = drift.tick()
    assert requests == []
    assert f"The drift report for {SHIFTED_AGAIN} drifted" in skip
    assert "the cooldown of 24 h allows the next at" in skip
    assert drift.tick()[0] == [], "the cooldown holds on the next tick too"


def test_without_a_cooldown_each_drifted_report_requests_training(
    instance: dg.DagsterInstance, storage: Path
) -> None:
    drift = Drift(instance, storage, cooldown_h=0)
    drift.report(SHIFTED)
    assert len(drift.tick()[0]) == 1
    drift.report(SHIFTED_AGAIN)
    (request,) = drift.tick()[0]
    assert request.tags["aiplatform/drift_report"] == SHIFTED_AGAIN


def test_a_training_run_started_elsewhere_holds_the_cooldown(
    instance: dg.DagsterInstance, storage: Path
) -> None:
    job = load_definitions().resolve_job_def("training_job")
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.SUCCESS)
    drift = Drift(instance, storage, cooldown_h=24)
    drift.report(SHIFTED)
    requests, skip = drift.tick()
    assert requests == [] and "cooldown" in skip


def test_the_sensor_and_weekly_schedule_target_training_and_start_stopped() -> None:
    defs = load_definitions()
    sensor = defs.resolve_sensor_def("drift_retrain_sensor")
    assert sensor.job_name == "training_job"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.job_name == "training_job"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * 1", "UTC")
    assert weekly_retrain.default_status == dg.DefaultScheduleStatus.STOPPED
    graph = defs.resolve_asset_graph()
    node = graph.get(query_drift_report.key)
    assert node.group_name == "monitoring" and node.pools == {"cpu"}
