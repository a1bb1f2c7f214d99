"""Per-key rate limits: a token bucket for each key name.

A bucket holds up to ``requests_per_minute`` tokens and refills at ``requests_per_minute / 60``
per second, so a key may burst its whole minute at once but never average more. With
``AIPLATFORM_REDIS_URL`` set the buckets live in Redis, updated by one Lua script on Redis's own
clock, so every replica draws from the same bucket; otherwise each process keeps its own.
A Redis that fails falls back to the process's buckets (still a limit, per replica) and is
counted, rather than refusing or waving through every request.
"""

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiplatform_dagster.config import Settings

logger = logging.getLogger(__name__)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key name; thread-safe, with an injectable clock for tests."""

    in_process = True

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, name: str, requests_per_minute: int) -> float | None:
        """Take a token for ``name``: None if allowed, else whole seconds (>= 1) to wait.

        The wait is rounded up, so a client that honours ``Retry-After`` finds a token. A
        refused request takes nothing. A changed limit (the key file was edited) applies at
        once; a bucket never holds more than the current limit.
        """
        if requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive, not {requests_per_minute}")
        capacity = float(requests_per_minute)
        rate = requests_per_minute / 60.0
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(tokens=capacity, updated=now)
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(capacity, bucket.tokens + elapsed * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0 - 1e-9:  # float error must not refuse a refilled token
                bucket.tokens = max(bucket.tokens - 1.0, 0.0)
                return None
            return _whole_seconds((1.0 - bucket.tokens) / rate)

    def forget(self, name: str) -> None:
        """Drop a key's bucket (it was revoked), so the limiter's memory follows the key file."""
        with self._lock:
            self._buckets.pop(name, None)


class Limiter(Protocol):
    in_process: bool
    """True when ``acquire`` never waits on the network, so the API calls it on its event loop
    (a thread hand-off cost a cached answer about a fifth of its throughput)."""

    def acquire(self, name: str, requests_per_minute: int) -> float | None: ...

    def forget(self, name: str) -> None: ...


_TAKE_TOKEN = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(now - updated, 0) * rate)
local wait = 0
if tokens >= 1 - 1e-9 then tokens = math.max(tokens - 1, 0) else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every replica; ``fallback`` when Redis fails."""

    in_process = False

    def __init__(self, url: str, prefix: str, on_failure: Callable[[], None] = lambda: None):
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._client.register_script(_TAKE_TOKEN)
        self._prefix = f"{prefix}ratelimit:"
        self._fallback = RateLimiter()
        self._on_failure = on_failure

    def acquire(self, name: str, requests_per_minute: int) -> float | None:
        import redis

        if requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive, not {requests_per_minute}")
        try:
            rate = requests_per_minute / 60.0
            wait = float(self._script(keys=[self._prefix + name], args=[requests_per_minute, rate]))
        except redis.RedisError as error:
            logger.warning("shared rate limit unavailable, limiting in this process: %s", error)
            self._on_failure()
            return self._fallback.acquire(name, requests_per_minute)
        return None if wait <= 0 else _whole_seconds(wait)

    def forget(self, name: str) -> None:
        import redis

        self._fallback.forget(name)
        with contextlib.suppress(redis.RedisError):  # else the bucket expires by itself
            self._client.delete(self._prefix + name)


def open_rate_limiter(settings: Settings, on_failure: Callable[[], None]) -> Limiter:
    """Shared buckets in the platform's Redis when there is one, else this process's."""
    if settings.cache.redis_url:
        return RedisRateLimiter(settings.cache.redis_url, settings.cache.redis_prefix, on_failure)
    return RateLimiter()


def _whole_seconds(wait: float) -> float:
    """Rounded up, so a client that honours ``Retry-After`` finds a token; at least 1."""
    return float(max(1, math.ceil(wait - 1e-9)))
