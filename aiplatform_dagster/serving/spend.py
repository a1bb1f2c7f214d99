"""Month-to-date LLM spend, shared by every replica, for the budget metric and its alerts.

A Prometheus counter restarts at zero with its process and knows no calendar month, so the
spend is kept in a ledger keyed by month: Redis (``INCRBYFLOAT``, shared by the replicas) when
the platform has one, else SQLite in the storage folder (one machine). A ledger that fails never
fails a query: ``add`` reports False and the caller counts the miss.
"""

import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from aiplatform_dagster.config import Settings

logger = logging.getLogger(__name__)
MONTH_TTL_S = 40 * 24 * 3600
"""A Redis month key outlives its month a little, then goes."""


def this_month(now: datetime | None = None) -> str:
    return f"{now or datetime.now(UTC):%Y-%m}"


class SpendLedger(Protocol):
    def add(self, usd: float) -> bool:
        """Add ``usd`` to this month; False when the ledger could not be written."""

    def month_to_date(self) -> float | None:
        """This month's spend so far (None when the ledger cannot be read)."""


class RedisSpend:
    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = f"{prefix}spend:"

    def add(self, usd: float) -> bool:
        import redis

        key = self._prefix + this_month()
        try:
            with self._client.pipeline() as pipe:
                pipe.incrbyfloat(key, usd).expire(key, MONTH_TTL_S).execute()
        except redis.RedisError as error:
            logger.warning("spend ledger not written: %s", error)
            return False
        return True

    def month_to_date(self) -> float | None:
        import redis

        try:
            value = self._client.get(self._prefix + this_month())
        except redis.RedisError:
            return None
        return float(value) if value is not None else 0.0


class LocalSpend:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, usd REAL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=5)

    def add(self, usd: float) -> bool:
        try:
            with self._lock, self._connect() as db:
                db.execute(
                    "INSERT INTO spend VALUES (?, ?) "
                    "ON CONFLICT(month) DO UPDATE SET usd = usd + excluded.usd",
                    (this_month(), usd),
                )
        except sqlite3.Error as error:
            logger.warning("spend ledger not written: %s", error)
            return False
        return True

    def month_to_date(self) -> float | None:
        try:
            with self._connect() as db:
                row = db.execute(
                    "SELECT usd FROM spend WHERE month = ?", (this_month(),)
                ).fetchone()
        except sqlite3.Error:
            return None
        return float(row[0]) if row else 0.0


def open_spend_ledger(settings: Settings) -> SpendLedger:
    if settings.cache.redis_url:
        return RedisSpend(settings.cache.redis_url, settings.cache.redis_prefix)
    return LocalSpend(settings.paths.storage_dir / "serving" / "spend.sqlite")
