"""A run killed with SIGKILL must not keep its concurrency-pool slot: later runs proceed.

Both ways of running are tried for real on a temporary DAGSTER_HOME with the project's
dagster.yaml: the CLI (`make ingest`: no daemon, the maintenance step cleans up) and
`dagster dev` (the daemon's run monitoring). The pooled steps come from pooled_defs.py.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from aiplatform_dagster.defs.maintenance import FINISHED, POOL_LIMITS, apply_pool_limits
from aiplatform_dagster_tests.dagster_dev import (
    BIN,
    PROJECT_ROOT,
    dagster_dev,
    instance_home,
    wait_until,
)

POOLED_DEFS = Path(__file__).with_name("pooled_defs.py")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return instance_home(tmp_path / "dagster_home")


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def dagster_env(home: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "AIPLATFORM_TEST_MARKER": str(home / "pid")}


def held_slots(instance: dg.DagsterInstance) -> list[str]:
    """Run ids holding a slot of the gpu pool."""
    info = instance.event_log_storage.get_concurrency_info("gpu")
    return [slot.run_id for slot in info.claimed_slots]


def maintenance(home: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "aiplatform_dagster.defs.maintenance"],
        cwd=PROJECT_ROOT, env=dagster_env(home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_project_pool_limits_are_applied_to_a_fresh_instance(
    instance: dg.DagsterInstance,
) -> None:
    apply_pool_limits(instance)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits == {"gpu": 1, "cpu": POOL_LIMITS["cpu"]}
    assert POOL_LIMITS["cpu"] > 1, "CPU steps of different runs may overlap"


def test_a_pool_limit_set_by_hand_is_kept(instance: dg.DagsterInstance) -> None:
    instance.event_log_storage.set_concurrency_slots("cpu", 7)
    instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
    apply_pool_limits(instance)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits == {"cpu": 7, "gpu": 1}


def test_a_pool_first_used_with_the_default_limit_gets_the_project_limit(
    instance: dg.DagsterInstance,
) -> None:
    """Dagster creates a pool at the default limit (1) when a step first uses it."""
    instance.event_log_storage.initialize_concurrency_limit_to_default("cpu")
    apply_pool_limits(instance)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits["cpu"] == POOL_LIMITS["cpu"]


@pytest.mark.slow
def test_a_killed_cli_run_frees_its_slot_for_the_next(home: Path) -> None:
    materialize = [BIN / "dagster", "asset", "materialize", "-f", str(POOLED_DEFS), "--select"]
    killed = subprocess.Popen(
        [*materialize, "blocker"], cwd=PROJECT_ROOT, env=dagster_env(home),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until((home / "pid").exists, 60, "the blocking step starting")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            assert held_slots(instance) == [run.run_id]
        assert run.run_id not in maintenance(home), "a live run is left alone"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the CLI and its step process, as an OOM kill
        killed.wait()

    report = maintenance(home)
    assert f"Marked run {run.run_id} as failed" in report
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert held_slots(instance) == []
    follower = subprocess.run(
        [*materialize, "follower"], cwd=PROJECT_ROOT, env=dagster_env(home),
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert follower.returncode == 0, follower.stderr[-3000:]


def submit(client: DagsterGraphQLClient, job_name: str) -> str | None:
    try:
        return client.submit_job_execution(job_name)
    except DagsterGraphQLClientError:  # the webserver is not serving the location yet
        return None


@pytest.mark.slow
def test_under_dagster_dev_a_killed_run_frees_its_slot_for_the_next(home: Path) -> None:
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 5  # the project's 30 s, shortened
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dagster_dev(["-f", str(POOLED_DEFS)], dagster_env(home), cwd=home) as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
        killed = wait_until(lambda: submit(client, "blocker_job"), 120, "dagster dev serving")
        wait_until((home / "pid").exists, 60, "the blocking step starting")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert held_slots(instance) == [killed]
            [start] = instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_START)
        os.kill(start.dagster_event.pid, signal.SIGKILL)  # the run worker, as an OOM kill would

        follower = client.submit_job_execution("follower_job")
        status = wait_until(
            lambda: (s := client.get_run_status(follower)) in FINISHED and s, 90, "the next run"
        )
        assert status == dg.DagsterRunStatus.SUCCESS
        assert client.get_run_status(killed) == dg.DagsterRunStatus.FAILURE
