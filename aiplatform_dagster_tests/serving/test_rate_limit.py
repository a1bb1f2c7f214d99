"""Per-key token buckets: a burst of the minute's limit, then refusals with a Retry-After."""

import threading

import pytest

from aiplatform_dagster.serving.rate_limit import RateLimiter, RedisRateLimiter
from aiplatform_dagster_tests.conftest import REDIS_URL


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_limit_is_allowed_then_refused_with_whole_seconds() -> None:
    limiter = RateLimiter(clock=FakeClock())

    assert [limiter.acquire("k", 5) for _ in range(5)] == [None] * 5
    # 5 per minute: one token every 12 s.
    assert limiter.acquire("k", 5) == 12.0
    assert limiter.acquire("k", 5) == 12.0


def test_retry_after_is_rounded_up_and_at_least_one_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(600):
        assert limiter.acquire("fast", 600) is None

    # 600 per minute: a token every 0.1 s, still reported as 1 s.
    assert limiter.acquire("fast", 600) == 1.0
    for _ in range(5):
        limiter.acquire("slow", 5)
    clock.advance(0.5)
    assert limiter.acquire("slow", 5) == 12.0  # 11.5 s rounded up


def test_bucket_refills_with_time_up_to_its_capacity() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(60):
        limiter.acquire("k", 60)
    assert limiter.acquire("k", 60) == 1.0

    clock.advance(1.0)
    assert limiter.acquire("k", 60) is None
    assert limiter.acquire("k", 60) == 1.0

    clock.advance(3600)  # an idle hour refills to the minute's limit, not beyond
    assert [limiter.acquire("k", 60) for _ in range(60)] == [None] * 60
    assert limiter.acquire("k", 60) is not None


def test_refill_at_an_awkward_rate_is_not_lost_to_float_error() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(7):
        limiter.acquire("k", 7)
    for _ in range(20):
        clock.advance(60 / 7)
        assert limiter.acquire("k", 7) is None


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(clock=FakeClock())
    for _ in range(3):
        assert limiter.acquire("a", 3) is None
    assert limiter.acquire("a", 3) is not None

    assert limiter.acquire("b", 3) is None
    limiter.forget("a")
    assert limiter.acquire("a", 3) is None


def test_lowered_limit_applies_at_once() -> None:
    limiter = RateLimiter(clock=FakeClock())
    assert limiter.acquire("k", 100) is None

    assert [limiter.acquire("k", 2) for _ in range(3)] == [None, None, 30.0]


def test_non_positive_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter().acquire("k", 0)


def test_concurrent_requests_get_exactly_the_capacity() -> None:
    limiter = RateLimiter(clock=FakeClock())
    threads_count, attempts, capacity = 32, 20, 100
    start = threading.Barrier(threads_count)
    allowed: list[int] = []
    tally = threading.Lock()

    def hammer() -> None:
        start.wait()
        mine = sum(limiter.acquire("shared", capacity) is None for _ in range(attempts))
        with tally:
            allowed.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(allowed) == capacity


def test_real_clock_by_default() -> None:
    limiter = RateLimiter()
    assert limiter.acquire("k", 1) is None
    assert limiter.acquire("k", 1) == 60.0


def test_replicas_sharing_redis_share_one_bucket(redis_prefix: str) -> None:
    """Two replicas (two limiters on this machine's Redis) draw from the same minute."""
    replicas = [RedisRateLimiter(REDIS_URL, redis_prefix) for _ in range(2)]
    allowed = [replicas[i % 2].acquire("shared", 5) for i in range(5)]
    assert allowed == [None] * 5
    assert replicas[0].acquire("shared", 5) == 12.0
    assert replicas[1].acquire("shared", 5) == 12.0
    assert RedisRateLimiter(REDIS_URL, redis_prefix).acquire("other", 5) is None


def test_redis_down_falls_back_to_this_process_and_is_counted() -> None:
    failures: list[int] = []
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "x:", lambda: failures.append(1))
    assert [limiter.acquire("k", 2) for _ in range(3)] == [None, None, 30.0]
    assert len(failures) == 3
