"""Response cache: the same request to the same model with the same settings gets the stored
answer instead of a new LLM call.

The key is the exact request: the messages as sent (question and every source's text, so a
re-ingested, merged or truncated source is another key), the model, its endpoint and sampling
settings, and the prompt version. Redis is shared by all API replicas; the SQLite backend
serves a laptop or a single node. Hit and miss counters live in the backend too, so the hit
rate covers every process, not only the current one.

A cache is an optimisation, never a dependency: a backend that is down or broken raises
``CacheUnavailable`` from the call that met it (counted in ``stats().errors``), and the query
path answers without the cache and says so. An unreachable Redis never stops a process from
starting, and is left alone for ``retry_after_s`` after a failure so each query does not wait
on it.
"""

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.tallies import PendingTally

DEFAULT_TTL_SECONDS = 86400
DEFAULT_REDIS_PREFIX = "aiplatform:cache:"
DEFAULT_REDIS_TIMEOUT_S = 2.0
DEFAULT_RETRY_AFTER_S = 30.0
KEY_SCHEME_VERSION = 2
"""Bump when the key payload changes, so old entries are not read under the new meaning."""


def cache_key(
    messages: Sequence[Mapping[str, str]], generation: Mapping[str, Any], prompt_version: str
) -> str:
    """SHA-256 of the canonical JSON of the request: ``messages`` exactly as sent and
    ``generation``, everything else the client sends (model, endpoint, sampling settings)."""
    payload = json.dumps(
        {
            "v": KEY_SCHEME_VERSION,
            "messages": [dict(message) for message in messages],
            "generation": dict(generation),
            "prompt": prompt_version,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CacheUnavailable(PlatformError):
    """The cache backend could not be used for this call; the caller goes on without it."""


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    errors: int = 0
    """Lookups and stores that failed in this process: those queries went without the cache."""
    unavailable: str | None = None
    """Why the shared hit and miss counters could not be read (they read 0 then)."""

    @property
    def hit_rate(self) -> float:
        """Hits per lookup; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResponseCache(Protocol):
    local: bool
    """True when ``get`` reads a file on this machine and never waits on the network, so a
    server may look an answer up on its event loop (a worker thread's hand-off and its wait for
    the interpreter lock cost a cached answer more than the lookup)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry or None; raises CacheUnavailable when the backend fails."""
        ...

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store an entry; raises CacheUnavailable when the backend fails."""
        ...

    def stats(self) -> CacheStats: ...


def _check_ttl(ttl_seconds: int) -> None:
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")


class RedisResponseCache:
    """JSON entries under ``prefix`` with a TTL; counters are Redis integers next to them.

    Nothing is contacted on construction, so a Redis that is down never stops a process from
    starting; each call that cannot reach it raises CacheUnavailable, and for
    ``retry_after_s`` after that, calls are skipped at once instead of waiting on timeouts.
    """

    local = False

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_REDIS_PREFIX,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        import redis

        _check_ttl(ttl_seconds)
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._url = _redact(url)
        self._prefix = prefix
        self._ttl_seconds = ttl_seconds
        self._retry_after_s = retry_after_s
        self._errors = 0
        self._down_until = 0.0
        self._down_because = ""

    def entry_key(self, key: str) -> str:
        """The Redis key an entry is stored under."""
        return f"{self._prefix}entry:{key}"

    def get(self, key: str) -> dict[str, Any] | None:
        def lookup() -> Any:
            raw = self._client.get(self.entry_key(key))
            self._client.incr(f"{self._prefix}{'misses' if raw is None else 'hits'}")
            return raw

        raw = self._call(lookup)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: dict[str, Any]) -> None:
        payload = json.dumps(value)
        self._call(lambda: self._client.set(self.entry_key(key), payload, ex=self._ttl_seconds))

    def stats(self) -> CacheStats:
        import redis

        try:
            hits, misses = self._client.mget(f"{self._prefix}hits", f"{self._prefix}misses")
        except redis.RedisError as error:
            return CacheStats(0, 0, self._errors, self._unreachable(error))
        return CacheStats(int(hits or 0), int(misses or 0), self._errors)

    def _call(self, operation: Callable[[], Any]) -> Any:
        """``operation()``, or CacheUnavailable (counted) when Redis fails or failed lately."""
        import redis

        now = time.monotonic()
        if now < self._down_until:
            self._errors += 1
            raise CacheUnavailable(
                f"{self._down_because}; skipped, retrying in {self._down_until - now:.0f} s"
            )
        try:
            return operation()
        except redis.RedisError as error:
            self._errors += 1
            self._down_because = self._unreachable(error)
            self._down_until = time.monotonic() + self._retry_after_s
            raise CacheUnavailable(self._down_because) from error

    def _unreachable(self, error: Exception) -> str:
        return (
            f"the Redis response cache at {self._url} is unreachable ({error}): start Redis or "
            "fix AIPLATFORM_REDIS_URL, or unset it to use the local cache"
        )


class LocalResponseCache:
    """SQLite in WAL mode: readers and writers in several processes share one file safely.

    A lookup only reads, so it never waits on a writer. Its hit or miss is counted in this
    process and added to the shared counters with the next store, at the first lookup at least
    ``counter_flush_s`` after the last addition, when ``stats()`` is read, and when the
    instance is collected or the process exits; a killed process loses at most that interval's
    counts. (Committing a counter on every lookup queued every cache hit of a busy API on the
    file's one write lock.)
    """

    local = True

    def __init__(
        self, path: Path, ttl_seconds: int = DEFAULT_TTL_SECONDS, counter_flush_s: float = 1.0
    ) -> None:
        _check_ttl(ttl_seconds)
        self._path = Path(path)
        self._ttl_seconds = ttl_seconds
        self._errors = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with _connect(self._path) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, count INTEGER)"
            )
        self._counts = PendingTally(counter_flush_s)
        self._counts.flush_when_collected(self, partial(_write_counts, self._path))

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection: sqlite3 connections must not cross threads (nor forks), and
        opening one per call cost more than the lookup it served."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn, local.pid = _open(self._path), os.getpid()
        return local.conn

    def get(self, key: str) -> dict[str, Any] | None:
        def lookup() -> Any:
            query = "SELECT value FROM entries WHERE key = ? AND expires_at > ?"
            return self._connection().execute(query, (key, time.time())).fetchone()

        row = self._call(lookup)
        if self._counts.add("misses" if row is None else "hits"):
            self._flush_counts()
        return None if row is None else json.loads(row[0])

    def set(self, key: str, value: dict[str, Any]) -> None:
        def store() -> None:
            now = time.time()
            with self._connection() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO entries (key, value, expires_at) VALUES (?, ?, ?)",
                    (key, json.dumps(value), now + self._ttl_seconds),
                )
                # Expired entries are never read; deleting them here keeps the file bounded.
                conn.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))
                _add_counts(conn, counts)

        with self._counts.taken() as counts:
            self._call(store)

    def stats(self) -> CacheStats:
        self._flush_counts()
        try:
            rows = self._connection().execute("SELECT name, count FROM counters").fetchall()
        except sqlite3.Error as error:
            return CacheStats(0, 0, self._errors, self._broken(error))
        counts = dict(rows)
        return CacheStats(counts.get("hits", 0), counts.get("misses", 0), self._errors)

    def _flush_counts(self) -> None:
        """Add this process's pending counts to the shared ones; kept for later on failure."""
        try:
            self._counts.flush(partial(_write_counts, self._path))
        except sqlite3.Error:
            self._errors += 1

    def _call(self, operation: Callable[[], Any]) -> Any:
        """``operation()``, or CacheUnavailable (counted) when the SQLite file fails."""
        try:
            return operation()
        except sqlite3.Error as error:
            self._errors += 1
            self._local.pid = None  # the next call opens a new connection
            raise CacheUnavailable(self._broken(error)) from error

    def _broken(self, error: Exception) -> str:
        return (
            f"the local response cache {self._path} cannot be used ({error}): delete the file "
            "(it only holds cached answers) or fix its folder's permissions and free space"
        )


def _open(path: Path) -> sqlite3.Connection:
    # synchronous=NORMAL: in WAL mode a commit then skips the fsync, and a power cut can lose
    # only the newest entries of a cache.
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _connect(path: Path) -> closing[sqlite3.Connection]:
    """A connection closed after one use (setup and the finalizer's flush)."""
    return closing(_open(path))


def _add_counts(conn: sqlite3.Connection, counts: Counter[str]) -> None:
    conn.executemany(
        "INSERT INTO counters (name, count) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET count = count + excluded.count",
        [(name, count) for name, count in counts.items() if count],
    )


def _write_counts(path: Path, counts: Counter[str]) -> None:
    """Module-level, so the finalizer holds no reference to the cache it flushes for."""
    with _connect(path) as conn, conn:
        _add_counts(conn, counts)


def open_cache(
    redis_url: str | None,
    local_path: Path,
    ttl: int = DEFAULT_TTL_SECONDS,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
) -> ResponseCache:
    """Redis when a URL is configured, else SQLite at ``local_path``.

    An unreachable Redis is not replaced by the local file (that would split the cache across
    replicas): its calls fail with CacheUnavailable and queries go without the cache."""
    if redis_url:
        return RedisResponseCache(redis_url, prefix=redis_prefix, ttl_seconds=ttl)
    return LocalResponseCache(local_path, ttl_seconds=ttl)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
