"""Both cache backends must round-trip answers, count hits, expire, and key on every input."""

import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import redis

from aiplatform_dagster.rag.query.cache import (
    CacheUnavailable,
    LocalResponseCache,
    RedisResponseCache,
    ResponseCache,
    cache_key,
    open_cache,
)
from aiplatform_dagster_tests.conftest import REDIS_URL
from aiplatform_dagster_tests.rag.query.conftest import OwnRedis, free_port

ANSWER = {"answer": "Rotate it with the secrets job.", "citations": ["c1", "c2"], "ü": "ß"}
MESSAGES = (
    {"role": "system", "content": "Cite sources."},
    {"role": "user", "content": "[1] Keys rotate every 90 days.\n\nHow do I rotate keys?"},
)
GENERATION = {"model": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 1024}
KEY_PARTS = (MESSAGES, GENERATION, "prompt-v3")


@pytest.fixture(params=["redis", "sqlite"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[int], ResponseCache]:
    """Builds a cache of either backend with a given TTL."""
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        return lambda ttl: RedisResponseCache(REDIS_URL, prefix=prefix, ttl_seconds=ttl)
    return lambda ttl: LocalResponseCache(tmp_path / "cache.sqlite", ttl_seconds=ttl)


def test_equal_inputs_give_equal_keys() -> None:
    assert cache_key(*KEY_PARTS) == cache_key(
        [dict(message) for message in MESSAGES],
        {"max_tokens": 1024, "temperature": 0.0, "model": "gpt-4o-mini"},
        "prompt-v3",
    )


def _with_user(content: str) -> tuple[dict, ...]:
    return (MESSAGES[0], {"role": "user", "content": content})


@pytest.mark.parametrize(
    "changed",
    [
        (_with_user("[1] Keys rotate every 90 days.\n\nHow do I rotate tokens?"), GENERATION),
        (_with_user("[1] Keys rotate every 90 days\n\nHow do I rotate keys?"), GENERATION),
        (_with_user("[1] Keys rotate every 90 days.\n\nhow do I rotate keys?"), GENERATION),
        (MESSAGES[::-1], GENERATION),
        (MESSAGES[1:], GENERATION),
        (MESSAGES, {**GENERATION, "model": "gpt-4o"}),
        (MESSAGES, {**GENERATION, "temperature": 0.7}),
        (MESSAGES, {**GENERATION, "max_tokens": 256}),
        (MESSAGES, {**GENERATION, "endpoint": "http://127.0.0.1:8000/v1"}),
    ],
)
def test_any_differing_input_gives_another_key(changed: tuple) -> None:
    assert cache_key(*changed, "prompt-v3") != cache_key(*KEY_PARTS)


def test_another_prompt_version_gives_another_key() -> None:
    assert cache_key(MESSAGES, GENERATION, "prompt-v4") != cache_key(*KEY_PARTS)


def test_keys_are_sha256_hex() -> None:
    key = cache_key(*KEY_PARTS)

    assert len(key) == 64
    assert int(key, 16) >= 0


def test_a_stored_answer_round_trips_and_hits_are_counted(
    make_cache: Callable[[int], ResponseCache],
) -> None:
    cache: ResponseCache = make_cache(60)
    key = cache_key(*KEY_PARTS)

    assert cache.get(key) is None
    cache.set(key, ANSWER)
    assert cache.get(key) == ANSWER
    assert cache.get(key) == ANSWER

    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 1)
    assert stats.hit_rate == pytest.approx(2 / 3)


def test_counters_are_shared_by_every_instance_on_the_same_backend(
    make_cache: Callable[[int], ResponseCache],
) -> None:
    key = cache_key(*KEY_PARTS)
    make_cache(60).set(key, ANSWER)

    make_cache(60).get(key)
    make_cache(60).get("missing")

    stats = make_cache(60).stats()
    assert (stats.hits, stats.misses) == (1, 1)


def test_entries_expire_after_their_ttl(make_cache: Callable[[int], ResponseCache]) -> None:
    cache: ResponseCache = make_cache(1)
    key = cache_key(*KEY_PARTS)
    cache.set(key, ANSWER)
    assert cache.get(key) == ANSWER

    time.sleep(1.2)

    assert cache.get(key) is None


def test_redis_entries_carry_their_ttl_and_vanish_from_redis(redis_prefix: str) -> None:
    cache = RedisResponseCache(REDIS_URL, prefix=redis_prefix, ttl_seconds=1)
    client = redis.Redis.from_url(REDIS_URL)
    key = cache_key(*KEY_PARTS)

    cache.set(key, ANSWER)
    assert 0 < client.pttl(cache.entry_key(key)) <= 1000
    time.sleep(1.2)

    assert not client.exists(cache.entry_key(key))


def test_stats_start_at_zero(make_cache: Callable[[int], ResponseCache]) -> None:
    stats = make_cache(60).stats()

    assert (stats.hits, stats.misses, stats.hit_rate) == (0, 0, 0.0)


def _hammer(path: Path, worker: int) -> None:
    cache = LocalResponseCache(path, ttl_seconds=60)
    for i in range(50):
        cache.set(f"{worker}-{i}", {"worker": worker, "i": i})
        assert cache.get(f"{worker}-{i}") == {"worker": worker, "i": i}


def test_the_local_cache_is_safe_for_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ProcessPoolExecutor(max_workers=3, mp_context=get_context("spawn")) as pool:
        list(pool.map(_hammer, [path] * 3, range(3)))

    cache = LocalResponseCache(path, ttl_seconds=60)
    assert cache.stats().hits == 150
    assert cache.get("2-49") == {"worker": 2, "i": 49}


def test_a_local_lookup_answers_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.sqlite"
    cache = LocalResponseCache(path, ttl_seconds=60)
    cache.set("key", ANSWER)
    writer = sqlite3.connect(path, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # a store in progress elsewhere holds the one write lock
    try:
        with ThreadPoolExecutor(1) as pool:
            found = pool.submit(cache.get, "key").result(timeout=10)
    finally:
        writer.rollback()
        writer.close()

    assert found == ANSWER


def test_local_counts_reach_other_instances_after_the_flush_interval_and_on_collection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.sqlite"
    reader = LocalResponseCache(path, ttl_seconds=60)
    busy = LocalResponseCache(path, ttl_seconds=60, counter_flush_s=0.2)
    busy.get("missing")
    time.sleep(0.25)
    busy.get("missing")  # due: both lookups are added

    assert reader.stats().misses == 2

    busy.get("missing")
    del busy  # collected: its last count is added too

    assert reader.stats().misses == 3


def test_open_cache_uses_redis_when_a_url_is_configured(tmp_path: Path) -> None:
    assert isinstance(open_cache(REDIS_URL, tmp_path / "cache.sqlite", 60), RedisResponseCache)
    assert isinstance(open_cache(None, tmp_path / "cache.sqlite", 60), LocalResponseCache)


def test_an_unreachable_redis_opens_as_a_cache_that_says_it_is_unavailable(
    tmp_path: Path,
) -> None:
    cache = open_cache(f"redis://:s3cret@127.0.0.1:{free_port()}/0", tmp_path / "c.sqlite", 60)

    with pytest.raises(CacheUnavailable, match="unreachable") as error:
        cache.get("key")
    with pytest.raises(CacheUnavailable):
        cache.set("key", ANSWER)
    stats = cache.stats()

    assert "s3cret" not in str(error.value) and "AIPLATFORM_REDIS_URL" in str(error.value)
    assert (stats.hits, stats.misses, stats.errors) == (0, 0, 2)
    assert stats.unavailable and "unreachable" in stats.unavailable
    assert not (tmp_path / "c.sqlite").exists()  # no silent split of the shared cache


def test_a_redis_lost_after_start_fails_each_call_cleanly_until_it_is_back(
    own_redis: OwnRedis,
) -> None:
    cache = RedisResponseCache(own_redis.url, prefix="t:", ttl_seconds=60, retry_after_s=0)
    cache.set("key", ANSWER)
    assert cache.get("key") == ANSWER

    own_redis.kill()
    with pytest.raises(CacheUnavailable, match=str(own_redis.port)):
        cache.get("key")
    with pytest.raises(CacheUnavailable):
        cache.set("key", ANSWER)
    assert cache.stats().errors == 2

    own_redis.start()  # the same port, empty: nothing was persisted
    assert cache.get("key") is None
    cache.set("key", ANSWER)
    assert cache.get("key") == ANSWER
    assert (cache.stats().hits, cache.stats().misses, cache.stats().errors) == (1, 1, 2)


def test_after_a_failure_redis_is_left_alone_for_a_while(own_redis: OwnRedis) -> None:
    cache = RedisResponseCache(own_redis.url, prefix="t:", ttl_seconds=60, retry_after_s=60)
    own_redis.kill()
    with pytest.raises(CacheUnavailable):
        cache.get("key")
    own_redis.start()

    started = time.monotonic()
    with pytest.raises(CacheUnavailable, match="skipped"):
        cache.get("key")
    assert time.monotonic() - started < 0.1
    assert cache.stats().errors == 2


def test_a_corrupt_local_cache_file_fails_each_call_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = LocalResponseCache(path, ttl_seconds=60)
    for leftover in tmp_path.glob("cache.sqlite*"):
        leftover.write_bytes(b"this is not a database" * 100)

    with pytest.raises(CacheUnavailable, match=str(path)):
        cache.get("key")
    with pytest.raises(CacheUnavailable):
        cache.set("key", ANSWER)
    assert cache.stats().errors == 2
