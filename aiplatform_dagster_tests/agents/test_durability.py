"""Durable threads on this machine's PostgreSQL: a workflow process killed with SIGKILL resumes
in a new process without repeating a finished step or a side effect, and a checkpointer whose
database connections are terminated mid-workflow still finishes it."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aiplatform_dagster.agents.checkpoints import migrate
from aiplatform_dagster.agents.runtime import open_runtime
from aiplatform_dagster.agents.tools.base import ToolContext
from aiplatform_dagster.agents.tools.reports import reports_dir
from aiplatform_dagster.config import load_settings
from aiplatform_dagster_tests.agents.conftest import write_registry
from aiplatform_dagster_tests.agents.extra_tools import NoInput, spec, with_tools
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer
from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN, temporary_database

REPO = Path(__file__).resolve().parents[2]
WRITER = {
    "name": "writer",
    "role": "You write reports.",
    "tools": ["publish_report", "gate", "cut_connections"],
    "permissions": ["reports:write", "test"],
}
REQUEST = (
    'Publish, then wait. CALL publish_report {"title": "Durable", "body": "Written once."} '
    "CALL gate {}"
)


@pytest.fixture
def checkpoint_dsn() -> Iterator[str]:
    with temporary_database("agents_durable") as dsn:
        yield dsn


@pytest.fixture
def environment(tmp_path: Path, model_server: FakeOpenAIServer, checkpoint_dsn: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_LLM_BASE_URL": model_server.base_url,
        "AIPLATFORM_LLM_MAX_RETRIES": "0",
        "AIPLATFORM_AGENTS_CHECKPOINT_DSN": checkpoint_dsn,
        "AIPLATFORM_AGENTS_REGISTRY": str(write_registry(tmp_path, WRITER)),
        "AGENT_TEST_GATE_OPENED": str(tmp_path / "gate.opened"),
        "AGENT_TEST_GATE_REACHED": str(tmp_path / "gate.reached"),
    }
    migrate(load_settings(env))
    return env


def worker(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "aiplatform_dagster_tests.agents.durable_worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_planner_turns(server: FakeOpenAIServer) -> int:
    """Chat requests that were the planner's first turn (system + request, nothing else)."""
    return sum(
        1
        for r in server.chat_requests()
        if [m["role"] for m in r.body["messages"]] == ["system", "user"]
        and r.body["messages"][0]["content"] == WRITER["role"]
    )


def test_a_killed_workflow_resumes_in_a_new_process_without_repeating_anything(
    environment: dict, model_server: FakeOpenAIServer, tmp_path: Path
):
    running = worker(environment, "run", REQUEST)
    reached = Path(environment["AGENT_TEST_GATE_REACHED"])
    deadline = time.monotonic() + 120
    while not reached.exists():
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the workflow never reached the gate"
        time.sleep(0.05)
    settings = load_settings(environment)
    assert len(list(reports_dir(settings).iterdir())) == 1  # the side effect happened
    running.send_signal(signal.SIGKILL)
    running.wait(timeout=30)
    assert running.returncode == -signal.SIGKILL

    Path(environment["AGENT_TEST_GATE_OPENED"]).touch()
    resumed = worker(environment, "resume", "durable-1")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    result = json.loads(out.splitlines()[-1])

    assert result["status"] == "completed"
    reports = list(reports_dir(settings).iterdir())
    assert len(reports) == 1  # written once, not again by the re-run step
    publishes = [r for r in result["tool_results"] if r["tool"] == "publish_report"]
    assert [(p["status"], p["replayed"]) for p in publishes] == [("ok", True)]
    assert first_planner_turns(model_server) == 1  # the checkpointed planner step never re-ran


def test_the_workflow_finishes_when_its_database_connections_are_terminated(
    environment: dict, checkpoint_dsn: str
):
    database = checkpoint_dsn.rsplit("/", 1)[1]
    terminated: list[int] = []

    def cut_connections(arguments: NoInput, context: ToolContext) -> str:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        terminated.append(len(rows))
        return f"terminated {len(rows)} connections"

    settings = load_settings(environment)
    tools = with_tools(settings, spec("cut_connections", cut_connections, max_retries=0))
    with open_runtime(settings, tools=tools) as runtime:
        result = runtime.run("Cut, then carry on. CALL cut_connections {}", agent="writer")
        history = list(runtime.checkpointer.list({"configurable": {"thread_id": result.thread_id}}))
    assert terminated and terminated[0] >= 1  # the checkpointer's pooled connections died
    assert result.status == "completed"
    assert "terminated" in result.answer
    assert len(history) >= 5  # checkpoints kept being written after the cut
