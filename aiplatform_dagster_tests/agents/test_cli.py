"""``aiplatform agent ...`` as a user runs it: the shipped registry, the fake model, the sample
index for the knowledge base, Redis for shared memory."""

import json
import uuid
from pathlib import Path

import pytest
import redis

from aiplatform_dagster.cli import main
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster_tests.conftest import REDIS_URL
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer


@pytest.fixture
def agent_cli(
    tmp_path: Path, model_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", model_server.base_url)
    monkeypatch.setenv("AIPLATFORM_LLM_MAX_RETRIES", "0")
    for variable in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AIPLATFORM_AGENTS_REGISTRY"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "storage"


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main(["agent", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_run_before_migrate_says_to_migrate_then_works(agent_cli, capsys):
    assert main(["agent", "run", 'CALL calculator {"expression": "2+3"}']) == 2
    assert "aiplatform agent migrate" in capsys.readouterr().err
    assert main(["agent", "migrate"]) == 0
    capsys.readouterr()
    code, result = run_json(capsys, "run", 'CALL calculator {"expression": "2+3"}')
    assert code == 0
    assert (result["agent"], result["status"]) == ("researcher", "completed")
    assert "2+3 = 5" in result["answer"]


def test_list_shows_agents_tools_and_limits(agent_cli, capsys):
    assert main(["agent", "list"]) == 0
    out = capsys.readouterr().out
    assert "coordinator (hierarchical)" in out
    assert "delegates: researcher, analyst, web_reader, reporter" in out
    assert "needs approval: publish_report" in out


def test_a_waiting_thread_is_listed_and_resumed_from_the_cli(agent_cli, capsys):
    main(["agent", "migrate"])
    capsys.readouterr()
    request = 'Report. CALL publish_report {"title": "T", "body": "B"}'
    code, paused = run_json(capsys, "run", request, "--agent", "reporter")
    assert (code, paused["status"]) == (0, "waiting")
    assert main(["agent", "threads", "--status", "waiting"]) == 0
    listed = capsys.readouterr().out
    assert paused["thread_id"] in listed and "publish_report" in listed
    assert main(["agent", "resume", paused["thread_id"]]) == 2  # a decision is required
    assert "--approve or --reject" in capsys.readouterr().err
    code, done = run_json(capsys, "resume", paused["thread_id"], "--approve", "--note", "ok")
    assert (code, done["status"]) == (0, "completed")
    assert len(list((agent_cli / "agents" / "reports").iterdir())) == 1


def test_the_researcher_cites_knowledge_base_passages(
    sample_repository: IndexRepository, model_server, monkeypatch, capsys
):
    storage = sample_repository.root.parent
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(storage))
    monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", model_server.base_url)
    monkeypatch.setenv("AIPLATFORM_AGENTS_TRACE_DIR", str(storage / f"traces-{uuid.uuid4().hex}"))
    main(["agent", "migrate"])
    capsys.readouterr()
    request = 'How is the index searched? CALL search_knowledge_base {"query": "hybrid search"}'
    code, result = run_json(capsys, "run", request, "--agent", "researcher")
    assert (code, result["status"]) == (0, "completed")
    assert result["citations"]  # the answer cites passages the tool really returned
    assert set(result["citations"]) <= {s["chunk_id"] for s in result["sources"]}


def test_pool_workers_share_memory_in_redis_and_threads_stay_apart(
    agent_cli, capsys, monkeypatch, redis_prefix
):
    prefix = redis_prefix
    monkeypatch.setenv("AIPLATFORM_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("AIPLATFORM_AGENTS_MEMORY_PREFIX", prefix)
    client = redis.Redis.from_url(REDIS_URL)
    main(["agent", "migrate"])
    capsys.readouterr()
    request = (
        'Sums.\n- one CALL calculator {"expression": "1+1"}\n'
        '- two CALL calculator {"expression": "2+2"}'
    )
    _, first = run_json(capsys, "run", request, "--agent", "research_pool")
    _, second = run_json(capsys, "run", "Nothing to split.", "--mode", "parallel")
    keys = {k.decode() for k in client.scan_iter(f"{prefix}*")}
    assert keys == {
        f"{prefix}thread:{first['thread_id']}:memory",
        f"{prefix}thread:{second['thread_id']}:memory",
    }
    shared = client.hgetall(f"{prefix}thread:{first['thread_id']}:memory")
    assert {k.decode() for k in shared} == {"subtask 0", "subtask 1", "answer"}
    assert b"1+1 = 2" in shared[b"subtask 0"] or b"1+1 = 2" in shared[b"subtask 1"]
    assert 0 < client.ttl(f"{prefix}thread:{first['thread_id']}:memory") <= 24 * 3600
