"""Durable agent threads: a LangGraph checkpointer on PostgreSQL, or by default on SQLite in the
storage folder.

Opening never creates or alters tables. ``setup()`` takes locks and runs DDL, which must not
happen inside a request (langgraph#2887, #7630): ``aiplatform agent migrate`` runs it as its own
step, and opening a store it has not migrated fails at once with what to run. The PostgreSQL
checkpointer runs on a pool this module configures (max idle time, max lifetime, no prepared
statements so PgBouncer in transaction mode works; langgraph#3716, #5675, #7304); a pooled
connection that died while idle is replaced at checkout, and a call whose connection dies under
it is retried once on a fresh one.
"""

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiplatform_dagster.config import AgentSettings, Settings
from aiplatform_dagster.errors import PlatformError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

logger = logging.getLogger(__name__)

MIGRATE_COMMAND = "aiplatform agent migrate"
SQLITE_TABLES = frozenset({"checkpoints", "writes"})
"""The SQLite checkpointer's tables (the PostgreSQL one records its schema version instead)."""
THREADS_TABLE = "agent_threads"
CONNECT_TIMEOUT_S = 10

T = TypeVar("T")


class AgentStoreNotMigrated(PlatformError):
    """The checkpoint database lacks the tables, or the schema version, this code needs."""


class AgentStoreUnavailable(PlatformError):
    """The checkpoint database cannot be reached."""


def sqlite_path(settings: Settings) -> Path:
    """The embedded store: checkpoints and the thread index in one SQLite file."""
    return settings.paths.storage_dir / "agents" / "threads.sqlite"


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator["BaseCheckpointSaver"]:
    """The configured checkpointer, checked to be migrated; closed (pool included) on exit.

    Raises AgentStoreNotMigrated when ``aiplatform agent migrate`` has not run against this
    database (or ran with an older version), AgentStoreUnavailable when it cannot be reached.
    """
    dsn = settings.agents.checkpoint_dsn
    if dsn is None:
        path = sqlite_path(settings)
        if not path.exists():  # connecting would create an empty file
            raise _not_migrated(str(path), "no database file")
        with _sqlite_saver(path) as saver:
            missing = (SQLITE_TABLES | {THREADS_TABLE}) - Database(saver).tables()
            if missing:
                raise _not_migrated(str(path), f"missing tables {', '.join(sorted(missing))}")
            saver.is_setup = True  # checked above: the saver must not run its DDL in a request
            yield saver
        return
    url = dsn.get_secret_value()
    with _postgres_connection(url) as connection:
        _check_postgres_schema(postgres_saver(connection), _where(url))
    with _postgres_pool(url, settings.agents) as pool:
        yield postgres_saver(pool)


def migrate(settings: Settings) -> list[str]:
    """Create or upgrade the checkpoint tables and the thread index; safe to run again.

    Returns one line per store migrated, for the command to print.
    """
    from aiplatform_dagster.agents.threads import ThreadIndex

    dsn = settings.agents.checkpoint_dsn
    if dsn is None:
        path = sqlite_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _sqlite_saver(path) as saver:
            saver.setup()
            ThreadIndex.over(saver).setup()
        return [f"checkpoints and {THREADS_TABLE}: SQLite {path}"]
    url = dsn.get_secret_value()
    with _postgres_connection(url) as connection:
        saver = postgres_saver(connection)
        saver.setup()
        ThreadIndex.over(saver).setup()
        version = _postgres_schema_version(saver)
    return [f"checkpoints (schema version {version}) and {THREADS_TABLE}: PostgreSQL {_where(url)}"]


def postgres_saver(conn: Any) -> "PostgresSaver":
    """A PostgresSaver over ``conn`` (a connection or a pool) whose reads and writes are retried
    once when their connection turns out to be dead, so a checkpoint survives a dropped
    connection. Retrying is safe: every checkpoint write is an upsert."""
    return _reconnecting_saver_type()(conn)


class Database:
    """The checkpointer's own connection, for the thread index and the migration check: SQL is
    written once with ``?`` placeholders and runs on either backend."""

    def __init__(self, saver: "BaseCheckpointSaver") -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self._saver = saver
        self._lock: threading.Lock = saver.lock
        self.is_sqlite = isinstance(saver, SqliteSaver)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows ``sql`` returns (none for a statement without results), committed."""
        if self.is_sqlite:
            connection: sqlite3.Connection = self._saver.conn
            with self._lock:
                cursor = connection.execute(sql, params)
                names = [column[0] for column in cursor.description or ()]
                found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
                connection.commit()
            return found
        return _retried_once(lambda: self._postgres_rows(sql.replace("?", "%s"), params))

    def tables(self) -> set[str]:
        """Names of the tables in the database (PostgreSQL: in the current schema)."""
        if self.is_sqlite:
            found = self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {row["name"] for row in found}
        found = self.rows(
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema()"
        )
        return {row["name"] for row in found}

    def _postgres_rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock, _connection(self._saver.conn) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@contextmanager
def _sqlite_saver(path: Path) -> Iterator["SqliteSaver"]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    # The saver serialises its use of the connection with a lock; graphs run nodes in threads.
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        yield SqliteSaver(connection)
    finally:
        connection.close()


def _connection_kwargs() -> dict[str, Any]:
    """What every checkpoint connection needs: the saver reads dict rows and commits nothing
    itself; no prepared statements, which PgBouncer in transaction mode would break."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": None, "row_factory": dict_row}


@contextmanager
def _postgres_connection(dsn: str) -> Iterator[Any]:
    """One direct connection: its error says why the database is unreachable, where a pool
    would only time out."""
    import psycopg

    try:
        connection = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, **_connection_kwargs())
    except psycopg.OperationalError as error:
        raise AgentStoreUnavailable(
            f"cannot reach the agent checkpoint database {_where(dsn)}: "
            f"{str(error).strip()}. Start PostgreSQL or fix AIPLATFORM_AGENTS_CHECKPOINT_DSN "
            "(unset it for the embedded SQLite store)."
        ) from error
    with connection:
        yield connection


@contextmanager
def _postgres_pool(dsn: str, agents: AgentSettings) -> Iterator[Any]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=agents.pool_max_size,
        max_idle=agents.pool_max_idle_s,
        max_lifetime=agents.pool_max_lifetime_s,
        kwargs=_connection_kwargs(),
        check=ConnectionPool.check_connection,
        name="aiplatform-agents",
        open=False,
    )
    pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    try:
        yield pool
    finally:
        pool.close()


def _connection(conn: Any) -> AbstractContextManager[Any]:
    """A connection from ``conn``: borrowed from it when it is a pool, else ``conn`` itself."""
    from psycopg_pool import ConnectionPool

    return conn.connection() if isinstance(conn, ConnectionPool) else nullcontext(conn)


def _check_postgres_schema(saver: "PostgresSaver", where: str) -> None:
    db = Database(saver)
    missing = {"checkpoint_migrations", THREADS_TABLE} - db.tables()
    if missing:
        raise _not_migrated(where, f"missing tables {', '.join(sorted(missing))}")
    version, latest = _postgres_schema_version(saver), len(saver.MIGRATIONS) - 1
    if version < latest:
        raise _not_migrated(where, f"checkpoint schema version {version}, this code needs {latest}")


def _postgres_schema_version(saver: "PostgresSaver") -> int:
    found = Database(saver).rows("SELECT max(v) AS v FROM checkpoint_migrations")
    return -1 if found[0]["v"] is None else int(found[0]["v"])


def _not_migrated(where: str, what: str) -> AgentStoreNotMigrated:
    return AgentStoreNotMigrated(
        f"the agent store {where} is not set up ({what}): run `{MIGRATE_COMMAND}` once, "
        "before serving agents"
    )


def _where(dsn: str) -> str:
    """The database a DSN names, without its password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    host, port = params.get("host", "localhost"), params.get("port", 5432)
    return f"postgresql://{host}:{port}/{params.get('dbname', '')}"


def _retried_once(call: Callable[[], T]) -> T:
    """``call()``, once more when it failed because its connection was dropped (a restarted
    server, a terminated backend, a proxy that closed it): the pool hands out a live one."""
    import psycopg

    try:
        return call()
    except psycopg.OperationalError as error:
        logger.warning("checkpoint database connection lost (%s); retrying once", error)
        return call()


@cache
def _reconnecting_saver_type() -> type["PostgresSaver"]:
    """Built on first use, so importing this module does not import LangGraph."""
    from langgraph.checkpoint.postgres import PostgresSaver

    class ReconnectingPostgresSaver(PostgresSaver):
        """PostgresSaver whose calls are retried once on a dropped connection."""

        def put(self, *args: Any, **kwargs: Any) -> Any:
            return _retried_once(lambda: PostgresSaver.put(self, *args, **kwargs))

        def put_writes(self, *args: Any, **kwargs: Any) -> None:
            _retried_once(lambda: PostgresSaver.put_writes(self, *args, **kwargs))

        def get_tuple(self, *args: Any, **kwargs: Any) -> Any:
            return _retried_once(lambda: PostgresSaver.get_tuple(self, *args, **kwargs))

        def list(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            # The parent fetches every row before yielding, so reading them all up front
            # changes nothing but lets a dropped connection be retried.
            yield from _retried_once(lambda: [*PostgresSaver.list(self, *args, **kwargs)])

    return ReconnectingPostgresSaver
