"""The audit log: who asked what, when, and what was answered. Append-only.

Entries are written off the request path by one background thread: PostgreSQL in production
(``AIPLATFORM_SERVING_AUDIT_DSN``; a trigger refuses UPDATE, DELETE and TRUNCATE, so even the
service's own role cannot rewrite history), JSON lines per UTC day in the storage folder
otherwise. Question and answer text are stored plain, as a SHA-256 digest, or redacted to their
length (``AIPLATFORM_SERVING_AUDIT_TEXT``).

When PostgreSQL is down the query path keeps answering and entries wait in a bounded buffer,
written once the server is back: an audit outage must not become a service outage. The buffer's
size, the entries dropped when it overflowed and the last error are reported by ``/readyz`` and
``/metrics``, so the gap is explicit, never silent.
"""

import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError

logger = logging.getLogger(__name__)
MAX_BUFFER = 10_000
FLUSH_INTERVAL_S = 1.0


class TextPolicy(StrEnum):
    PLAIN = "plain"
    HASHED = "hashed"
    REDACTED = "redacted"


def protect(text: str, policy: TextPolicy) -> str:
    """``text`` as the audit log may keep it."""
    if policy is TextPolicy.PLAIN:
        return text
    if policy is TextPolicy.HASHED:
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"[redacted: {len(text)} characters]"


@dataclass(frozen=True)
class AuditEntry:
    request_id: str
    caller: str
    """The API key's name (never the key)."""
    endpoint: str
    status: int
    question: str
    answer: str
    release_id: str
    citations: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditUnavailable(PlatformError):
    """The audit store cannot be written now; the entries stay buffered."""


class AuditStore(Protocol):
    def write(self, entries: Sequence[AuditEntry]) -> None: ...

    def close(self) -> None: ...


class JsonLinesAudit:
    """One file per UTC day under ``root``, appended to, never rewritten."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, entries: Sequence[AuditEntry]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for day, lines in _by_day(entries).items():
                with (self.root / f"{day}.jsonl").open("a", encoding="utf-8") as log:
                    log.write("".join(lines))
        except OSError as error:
            message = f"cannot append to the audit log in {self.root}: {error}"
            raise AuditUnavailable(message) from error

    def close(self) -> None:
        pass


COLUMNS = ("at", "request_id", "caller", "endpoint", "status", "question", "answer",
           "release_id", "citations", "cost_usd", "latency_ms")  # fmt: skip
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    request_id text NOT NULL,
    caller text NOT NULL,
    endpoint text NOT NULL,
    status integer NOT NULL,
    question text NOT NULL,
    answer text NOT NULL,
    release_id text NOT NULL,
    citations text[] NOT NULL,
    cost_usd double precision NOT NULL,
    latency_ms double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""


class PostgresAudit:
    """The ``audit_log`` table (created with its append-only trigger on first use)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: Any = None

    def write(self, entries: Sequence[AuditEntry]) -> None:
        import psycopg

        rows = [tuple(asdict(entry)[column] for column in COLUMNS) for entry in entries]
        insert = (
            f"INSERT INTO audit_log ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        )
        try:
            connection = self._connect()
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(insert, rows)
        except psycopg.Error as error:
            self.close()
            raise AuditUnavailable(
                f"cannot write the audit log to PostgreSQL (AIPLATFORM_SERVING_AUDIT_DSN): "
                f"{str(error).strip()}"
            ) from error

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> Any:
        import psycopg

        if self._connection is None or self._connection.closed:
            connection = psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)
            connection.execute(SCHEMA)
            self._connection = connection
        return self._connection


class AuditLog:
    """Entries queued by requests (never blocking), written by one background thread."""

    def __init__(self, store: AuditStore, policy: TextPolicy, max_buffer: int = MAX_BUFFER):
        self.store = store
        self.policy = policy
        self._buffer: deque[AuditEntry] = deque()
        self._max_buffer = max_buffer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        entry = _protected(entry, self.policy)
        with self._lock:
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(entry)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def status(self) -> str:
        """``ok``, or how many entries wait and why (what ``/readyz`` shows)."""
        if self.last_error is None and not self.dropped:
            return "ok"
        waiting = f"{self.buffered} entries buffered, {self.dropped} dropped"
        return f"{waiting}: {self.last_error}" if self.last_error else waiting

    def flush(self) -> None:
        """Write what is buffered; on failure keep it for the next try."""
        with self._lock:
            pending = list(self._buffer)
        if not pending:
            return
        try:
            self.store.write(pending)
        except AuditUnavailable as error:
            if self.last_error is None:
                logger.error("audit log unavailable, buffering: %s", error)
            self.last_error = str(error)
            return
        with self._lock:
            for _ in range(min(len(pending), len(self._buffer))):
                self._buffer.popleft()
        if self.last_error is not None:
            logger.info("audit log written again after: %s", self.last_error)
        self.last_error = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()
        self.store.close()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()


def open_audit_log(settings: Settings) -> AuditLog:
    serving = settings.serving
    if serving.audit_dsn is not None:
        store: AuditStore = PostgresAudit(serving.audit_dsn.get_secret_value())
    else:
        store = JsonLinesAudit(settings.paths.storage_dir / "serving" / "audit")
    return AuditLog(store, TextPolicy(serving.audit_text))


def _protected(entry: AuditEntry, policy: TextPolicy) -> AuditEntry:
    return replace(
        entry, question=protect(entry.question, policy), answer=protect(entry.answer, policy)
    )


def _by_day(entries: Sequence[AuditEntry]) -> dict[str, list[str]]:
    days: dict[str, list[str]] = {}
    for entry in entries:
        row = {**asdict(entry), "at": entry.at.isoformat()}
        days.setdefault(f"{entry.at:%Y-%m-%d}", []).append(json.dumps(row) + "\n")
    return days
