"""The agents group with the real definitions: a SQLite store in a temporary storage folder
(migrated by the job), the shipped registry and suite, and the scripted model behind the fake
OpenAI server."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.agents.checkpoints import open_checkpointer
from aiplatform_dagster.agents.runtime import open_runtime
from aiplatform_dagster.agents.threads import ThreadIndex, ThreadStatus
from aiplatform_dagster.config import PROFILE_VARIABLE, load_settings
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.agents.assets import DAY_S
from aiplatform_dagster.defs.agents.sensors import SENSOR_NAME, agent_escalations_sensor
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster_tests.agents.conftest import write_registry
from aiplatform_dagster_tests.agents.scripted_model import scripted_agent_model
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

PUBLISH = 'Publish the findings. CALL publish_report {"title": "Findings", "body": "All good."}'


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions()


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh storage folder, no LLM, the packaged registry, SQLite and in-process memory."""
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path / "storage"))
    for variable in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "AIPLATFORM_LLM_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "AIPLATFORM_AGENTS_REGISTRY",
        "AIPLATFORM_AGENTS_CHECKPOINT_DSN",
        "AIPLATFORM_REDIS_URL",
        PROFILE_VARIABLE,
    ):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "storage"


@pytest.fixture
def llm(storage: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """The scripted model behind the fake OpenAI server, as the configured LLM."""
    with FakeOpenAIServer(chat_reply=scripted_agent_model) as server:
        monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("AIPLATFORM_LLM_MAX_RETRIES", "0")
        yield server


@pytest.fixture
def migrated(storage: Path, defs: dg.Definitions) -> Path:
    assert defs.resolve_job_def("migrate_agent_store").execute_in_process().success
    return storage


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialize(
    defs: dg.Definitions, *assets: str, config: dict | None = None
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(asset) for asset in assets],
        run_config={"ops": config or {}},
        raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's error and the errors that caused it."""
    [failed] = [event for event in result.all_node_events if event.is_step_failure]
    error, messages = failed.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_the_group_its_sensor_schedule_and_jobs(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    assert {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name == "agents"
    } == {"agent_registry", "agent_eval", "agent_escalations", "checkpoint_retention"}
    assert graph.get(dg.AssetKey("agent_eval")).parent_keys == {dg.AssetKey("agent_registry")}
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    job = defs.resolve_job_def(sensor.job_name)
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("agent_escalations")}
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = defs.resolve_schedule_def("daily_checkpoint_retention")
    assert schedule.job_name == "checkpoint_retention_job"
    for job in ("migrate_agent_store", "resume_agent_thread", "checkpoint_retention_job"):
        assert defs.resolve_job_def(job)


def test_the_store_is_migrated_by_its_own_job_never_by_a_step_that_reads_it(
    storage: Path, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    before = materialize(defs, "agent_escalations")
    assert not before.success and "aiplatform agent migrate" in failure_of(before)
    retention = metadata_of(materialize(defs, "checkpoint_retention"), "checkpoint_retention")
    assert retention["status"] == "not run" and "aiplatform agent migrate" in retention["reason"]
    assert not (storage / "agents").exists()  # nothing created outside the migration
    job = defs.resolve_job_def("migrate_agent_store")
    for _ in range(2):  # migrating again changes nothing
        result = job.execute_in_process(instance=instance)
        assert result.success
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert f"migrated checkpoints and agent_threads: SQLite {storage}" in "\n".join(logs)
    assert metadata_of(materialize(defs, "agent_escalations"), "agent_escalations")["waiting"] == 0


def test_agent_registry_shows_agents_and_tools_and_passes_its_check(
    storage: Path, defs: dg.Definitions
) -> None:
    result = materialize(defs, "agent_registry")
    assert result.success
    metadata = metadata_of(result, "agent_registry")
    assert metadata["agents"] == 6
    assert "| coordinator | hierarchical |" in metadata["agent_table"]
    assert "| publish_report | reports:write | True | reporter |" in metadata["tools"]
    assert metadata["sources"][0].endswith("agents/registry.yaml")
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "agent_registry_is_consistent" and check.passed
    assert check.metadata["problem_count"].value == 0


def test_the_check_fails_on_an_unknown_tool_and_a_forbidden_one_and_blocks_the_eval(
    storage: Path, defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = write_registry(
        tmp_path,
        {"name": "dreamer", "tools": ["calculator", "teleport"], "permissions": ["math"]},
        {"name": "sneak", "tools": ["sql_query"], "permissions": ["math"]},
    )
    monkeypatch.setenv("AIPLATFORM_AGENTS_REGISTRY", str(registry))
    result = materialize(defs, "agent_registry", "agent_eval")

    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["problem_count"].value == 2
    assert "dreamer: names unknown tool 'teleport'" in check.description
    assert "sneak: lists tool 'sql_query', which needs permission 'sql:read'" in check.description
    assert not result.asset_materializations_for_node("agent_eval")  # blocked by the check

    registry.write_text("version: 1\nagents:\n  - name: Bad Name\n    role: x\n", "utf-8")
    broken = materialize(defs, "agent_registry")
    assert not broken.success
    assert f"{registry}: agent 'Bad Name': field name" in failure_of(broken)


def test_agent_eval_without_an_llm_records_not_run_and_why(storage: Path, defs) -> None:
    metadata = metadata_of(materialize(defs, "agent_eval"), "agent_eval")
    assert metadata["status"] == "not run"
    assert "No LLM is configured" in metadata["reason"] and "OPENAI_API_KEY" in metadata["reason"]
    assert "success_rate" not in metadata


def test_agent_eval_runs_the_shipped_suite_through_every_mode(
    llm: FakeOpenAIServer, migrated: Path, defs: dg.Definitions
) -> None:
    result = materialize(defs, "agent_registry", "agent_eval")
    metadata = metadata_of(result, "agent_eval")

    assert metadata["status"] == "evaluated"
    assert metadata["tasks"] == metadata["passed"] == 5
    assert metadata["success_rate"] == 1.0
    for mode in ("sequential", "parallel", "hierarchical"):
        assert metadata[f"{mode}/success_rate"] == 1.0
        assert 0 < metadata[f"{mode}/latency_p50_ms"] <= metadata[f"{mode}/latency_p95_ms"]
        assert metadata[f"{mode}/steps"] >= 4 and metadata[f"{mode}/tokens"] > 0
        assert metadata[f"{mode}/cost_usd"] > 0
        assert f"| {mode} |" in metadata["modes"]
    assert "| forbidden_sql | sequential | researcher |" in metadata["task_results"]
    assert len(llm.chat_requests()) >= 5


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        sensor_name=SENSOR_NAME,
        resources={"platform": PlatformResource()},
    )
    return agent_escalations_sensor(context)


def test_a_waiting_thread_is_visible_requested_by_the_sensor_and_resumed_by_the_job(
    llm: FakeOpenAIServer, migrated: Path, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    quiet = tick(instance, None)
    assert isinstance(quiet, dg.SkipReason) and "0 threads waiting" in quiet.skip_message
    with open_runtime(load_settings()) as runtime:
        paused = runtime.run(PUBLISH, agent="reporter")
    assert paused.status == "waiting"

    first = tick(instance, None)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    assert first.run_requests[0].tags["aiplatform/waiting"] == "1"
    again = tick(instance, first.cursor)
    assert isinstance(again, dg.SkipReason) and "1 threads waiting" in again.skip_message

    escalations = metadata_of(materialize(defs, "agent_escalations"), "agent_escalations")
    assert escalations["waiting"] == 1 and escalations["thread_ids"] == [paused.thread_id]
    assert "reporter asks to call publish_report" in escalations["threads"]

    resume = defs.resolve_job_def("resume_agent_thread")
    config = {"thread_id": paused.thread_id, "decision": "approve", "note": "looks right"}
    result = resume.execute_in_process(
        run_config={"ops": {"resume_agent_thread_op": {"config": config}}}
    )
    assert result.success
    [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["status"].value == "completed"
    with open_checkpointer(load_settings()) as checkpointer:
        assert ThreadIndex.over(checkpointer).get(paused.thread_id).status == "completed"
    [report] = (migrated / "agents" / "reports").glob("*.md")
    assert report.read_text("utf-8") == "# Findings\n\nAll good.\n"

    cleared = tick(instance, first.cursor)
    assert isinstance(cleared, dg.SensorResult) and len(cleared.run_requests) == 1
    again = resume.execute_in_process(
        run_config={"ops": {"resume_agent_thread_op": {"config": config}}}, raise_on_error=False
    )
    assert not again.success
    assert f"cannot resume thread {paused.thread_id}" in failure_of(again)
    assert "completed; there is nothing to resume" in failure_of(again)


def test_checkpoint_retention_dry_run_reports_then_deletes_old_finished_threads_only(
    llm: FakeOpenAIServer, migrated: Path, defs: dg.Definitions
) -> None:
    settings = load_settings()
    with open_runtime(settings) as runtime:
        old = runtime.run('CALL calculator {"expression": "1+1"}', thread_id="old-done")
        runtime.run('CALL calculator {"expression": "2+2"}', thread_id="new-done")
        runtime.run(PUBLISH, agent="reporter", thread_id="old-waiting")
    assert old.status == "completed"
    with open_checkpointer(settings) as checkpointer:
        index = ThreadIndex.over(checkpointer)
        forty_days_ago = index.get("old-done").updated_at.timestamp() - 40 * DAY_S
        aged = ThreadIndex.over(checkpointer, clock=lambda: forty_days_ago)
        for thread_id in ("old-done", "old-waiting"):
            aged.save(replace(index.get(thread_id)))
        checkpoints = len(list(checkpointer.list({"configurable": {"thread_id": "old-done"}})))
    assert checkpoints > 0

    dry = metadata_of(
        materialize(
            defs,
            "checkpoint_retention",
            config={"checkpoint_retention": {"config": {"dry_run": True}}},
        ),
        "checkpoint_retention",
    )
    assert dry["dry_run"] is True and dry["older_than_days"] == 30.0
    assert (dry["would_delete/threads"], dry["would_delete/checkpoints"]) == (1, checkpoints)
    assert "| old-done | completed |" in dry["threads"]
    with open_checkpointer(settings) as checkpointer:
        assert ThreadIndex.over(checkpointer).get("old-done") is not None

    done = metadata_of(materialize(defs, "checkpoint_retention"), "checkpoint_retention")
    assert (done["deleted/threads"], done["deleted/checkpoints"]) == (1, checkpoints)
    with open_checkpointer(settings) as checkpointer:
        index = ThreadIndex.over(checkpointer)
        assert index.get("old-done") is None
        assert checkpointer.get_tuple({"configurable": {"thread_id": "old-done"}}) is None
        assert index.get("new-done").status == ThreadStatus.COMPLETED
        assert index.get("old-waiting").status == ThreadStatus.WAITING
