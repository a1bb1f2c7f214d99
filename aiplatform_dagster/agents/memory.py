"""Short-term memory the agents of one thread share (notes, intermediate findings), separate from
the checkpointed state: in Redis when the platform has one, so every worker serving the thread
sees it, else in the process.

Each thread's memory is one namespace that lives ``ttl`` seconds after its last write, so
abandoned threads clean up after themselves. Values are JSON in both backends, so what an agent
reads back is the same wherever it runs.
"""

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError

REDIS_TIMEOUT_S = 5.0


class MemoryUnavailable(PlatformError):
    """The shared memory's Redis cannot be reached."""


class SharedMemory(Protocol):
    """Key-value memory per thread; values are anything JSON can hold."""

    def put(self, thread_id: str, key: str, value: Any) -> None: ...

    def get(self, thread_id: str, key: str) -> Any | None: ...

    def items(self, thread_id: str) -> dict[str, Any]: ...

    def clear(self, thread_id: str) -> None: ...


class RedisMemory:
    """A Redis hash per thread, ``{prefix}thread:{id}:memory``; each write renews its TTL."""

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        self._url = url
        self._prefix = prefix
        self._ttl_s = ttl_s

    def key(self, thread_id: str) -> str:
        """The Redis key holding ``thread_id``'s memory."""
        return f"{self._prefix}thread:{thread_id}:memory"

    def put(self, thread_id: str, key: str, value: Any) -> None:
        payload = json.dumps(value)

        def write() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key(thread_id), key, payload)
                pipe.expire(self.key(thread_id), self._ttl_s)
                pipe.execute()

        self._call(write)

    def get(self, thread_id: str, key: str) -> Any | None:
        raw = self._call(lambda: self._client.hget(self.key(thread_id), key))
        return None if raw is None else json.loads(raw)

    def items(self, thread_id: str) -> dict[str, Any]:
        raw = self._call(lambda: self._client.hgetall(self.key(thread_id)))
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    def clear(self, thread_id: str) -> None:
        self._call(lambda: self._client.delete(self.key(thread_id)))

    def _call(self, operation: Callable[[], Any]) -> Any:
        import redis

        try:
            return operation()
        except redis.RedisError as error:
            raise MemoryUnavailable(
                f"the agents' shared memory in Redis at {_redacted(self._url)} is unreachable "
                f"({error}): start Redis or fix AIPLATFORM_REDIS_URL, or unset it to keep "
                "memory in the process"
            ) from error


class LocalMemory:
    """Memory in this process, with the same TTL rule as Redis: a thread's memory expires
    ``ttl_s`` after its last write."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._threads: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def put(self, thread_id: str, key: str, value: Any) -> None:
        payload = json.dumps(value)
        with self._lock:
            values = self._live(thread_id)
            self._threads[thread_id] = (self._clock() + self._ttl_s, {**values, key: payload})

    def get(self, thread_id: str, key: str) -> Any | None:
        with self._lock:
            raw = self._live(thread_id).get(key)
        return None if raw is None else json.loads(raw)

    def items(self, thread_id: str) -> dict[str, Any]:
        with self._lock:
            values = self._live(thread_id)
        return {name: json.loads(raw) for name, raw in values.items()}

    def clear(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(thread_id, None)

    def _live(self, thread_id: str) -> dict[str, str]:
        """The thread's values, dropped first when they have expired."""
        expires, values = self._threads.get(thread_id, (0.0, {}))
        if expires <= self._clock():
            self._threads.pop(thread_id, None)
            return {}
        return values


_local: dict[int, LocalMemory] = {}
_local_lock = threading.Lock()


def open_memory(settings: Settings) -> SharedMemory:
    """Redis when AIPLATFORM_REDIS_URL is set; else this process's memory, one per process so
    a thread resumed in the same process finds what its agents wrote."""
    agents = settings.agents
    if settings.cache.redis_url:
        return RedisMemory(settings.cache.redis_url, agents.memory_prefix, agents.memory_ttl_s)
    with _local_lock:
        return _local.setdefault(agents.memory_ttl_s, LocalMemory(agents.memory_ttl_s))


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
