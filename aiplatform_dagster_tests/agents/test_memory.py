"""Shared memory: one namespace per thread, shared by its agents, gone after its TTL; Redis and
the in-process fallback behave alike."""

import socket
import time
from pathlib import Path

import pytest
import redis

from aiplatform_dagster.agents.memory import (
    LocalMemory,
    MemoryUnavailable,
    RedisMemory,
    SharedMemory,
    open_memory,
)
from aiplatform_dagster.config import load_settings
from aiplatform_dagster_tests.conftest import REDIS_URL

FINDING = {"source": "runbooks/paging.md", "escalate_after_min": 15, "tags": ["sev-1", "ü"]}


@pytest.fixture(params=["redis", "local"])
def memory(request: pytest.FixtureRequest) -> SharedMemory:
    if request.param == "redis":
        return RedisMemory(REDIS_URL, request.getfixturevalue("redis_prefix"), ttl_s=60)
    return LocalMemory(ttl_s=60)


def test_agents_of_one_thread_share_memory_and_threads_are_isolated(memory: SharedMemory) -> None:
    researcher, writer = memory, memory  # two agents, each handed the thread's memory
    researcher.put("thread-1", "finding", FINDING)
    researcher.put("thread-1", "count", 3)
    assert writer.get("thread-1", "finding") == FINDING
    assert writer.items("thread-1") == {"finding": FINDING, "count": 3}
    assert writer.get("thread-2", "finding") is None and writer.items("thread-2") == {}
    writer.put("thread-2", "finding", "other")
    assert researcher.get("thread-1", "finding") == FINDING
    memory.clear("thread-1")
    assert memory.items("thread-1") == {} and memory.get("thread-2", "finding") == "other"


def test_values_are_json_round_tripped(memory: SharedMemory) -> None:
    memory.put("t", "pair", ("a", 1))
    assert memory.get("t", "pair") == ["a", 1]  # as JSON has it, whichever backend
    with pytest.raises(TypeError):
        memory.put("t", "set", {1, 2})


def test_redis_keys_are_namespaced_per_thread_and_expire(redis_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    memory = RedisMemory(REDIS_URL, redis_prefix, ttl_s=30)
    memory.put("thread-1", "k", "v")
    key = f"{redis_prefix}thread:thread-1:memory"
    assert memory.key("thread-1") == key and list(client.scan_iter(match=f"{redis_prefix}*")) == [
        key.encode()
    ]
    assert 0 < client.ttl(key) <= 30
    short = RedisMemory(REDIS_URL, redis_prefix, ttl_s=1)
    short.put("thread-2", "k", "v")
    assert short.get("thread-2", "k") == "v"
    time.sleep(1.5)
    assert short.get("thread-2", "k") is None and not client.exists(short.key("thread-2"))


def test_local_memory_expires_a_ttl_after_the_last_write() -> None:
    now = [100.0]
    memory = LocalMemory(ttl_s=10, clock=lambda: now[0])
    memory.put("t", "a", 1)
    now[0] += 8
    memory.put("t", "b", 2)  # renews the whole thread's memory, like EXPIRE on the hash
    now[0] += 8
    assert memory.items("t") == {"a": 1, "b": 2}
    now[0] += 2
    assert memory.items("t") == {} and memory.get("t", "a") is None


def test_an_unreachable_redis_names_the_variable_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    memory = RedisMemory(f"redis://:s3cret@127.0.0.1:{port}/0", "p:", ttl_s=60)
    with pytest.raises(MemoryUnavailable, match="AIPLATFORM_REDIS_URL") as error:
        memory.put("t", "k", "v")
    assert str(port) in str(error.value) and "s3cret" not in str(error.value)


def test_open_memory_uses_redis_when_configured_else_one_memory_per_process(
    tmp_path: Path,
) -> None:
    local = load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})
    assert isinstance(open_memory(local), LocalMemory)
    assert open_memory(local) is open_memory(local)  # a resumed thread finds what was written
    configured = load_settings({"AIPLATFORM_REDIS_URL": REDIS_URL})
    assert isinstance(open_memory(configured), RedisMemory)
