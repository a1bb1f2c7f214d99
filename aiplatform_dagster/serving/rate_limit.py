"""Per-key rate limits: a token bucket for each key name, in the serving process's memory.

A bucket holds up to ``requests_per_minute`` tokens and refills at ``requests_per_minute / 60``
per second, so a key may burst its whole minute at once but never average more. Limits are per
process: with several replicas each enforces its own, which bounds a key to replicas x limit.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key name; thread-safe, with an injectable clock for tests."""

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
            return float(max(1, math.ceil((1.0 - bucket.tokens) / rate - 1e-9)))

    def forget(self, name: str) -> None:
        """Drop a key's bucket (it was revoked), so the limiter's memory follows the key file."""
        with self._lock:
            self._buckets.pop(name, None)
