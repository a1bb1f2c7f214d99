"""Checkpointers: opened only once migrated, on SQLite or a PostgreSQL pool that outlives its
connections, with a real LangGraph graph writing through them."""

import operator
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from aiplatform_dagster.agents.checkpoints import (
    AgentStoreNotMigrated,
    AgentStoreUnavailable,
    migrate,
    open_checkpointer,
    postgres_saver,
    sqlite_path,
)
from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN, temporary_database


class Steps(TypedDict):
    steps: Annotated[list[str], operator.add]


def two_step_graph(during_first: Callable[[], None] = lambda: None) -> StateGraph:
    """first -> second, each appending its name; ``during_first`` runs inside the first."""

    def first(state: Steps) -> dict[str, Any]:
        during_first()
        return {"steps": ["first"]}

    graph = StateGraph(Steps)
    graph.add_node("first", first)
    graph.add_node("second", lambda state: {"steps": ["second"]})
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    graph.add_edge("second", END)
    return graph


def terminate_connections(url: str) -> int:
    """Kill every server process connected to the database at ``url``, as a restarted server
    or a proxy closing idle connections would; returns how many."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return killed[0]


def sqlite_settings(tmp_path: Path) -> Settings:
    return load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_database("agents_checkpoints") as url:
        yield url


@pytest.fixture
def postgres_settings(tmp_path: Path, postgres_url: str) -> Settings:
    return load_settings(
        {"AIPLATFORM_STORAGE_DIR": str(tmp_path), "AIPLATFORM_AGENTS_CHECKPOINT_DSN": postgres_url}
    )


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    return request.getfixturevalue("postgres_settings")


def test_a_store_not_migrated_is_refused_at_open_and_names_the_command(
    settings: Settings,
) -> None:
    with (
        pytest.raises(AgentStoreNotMigrated, match="aiplatform agent migrate"),
        open_checkpointer(settings),
    ):
        pass
    assert not sqlite_path(settings).exists()  # refusing did not create the embedded file


def test_migrate_twice_then_a_graph_checkpoints_and_a_new_checkpointer_reads_it(
    settings: Settings,
) -> None:
    assert migrate(settings) and migrate(settings)
    config = {"configurable": {"thread_id": "t-1"}}
    with open_checkpointer(settings) as checkpointer:
        result = two_step_graph().compile(checkpointer=checkpointer).invoke({"steps": []}, config)
    assert result == {"steps": ["first", "second"]}
    with open_checkpointer(settings) as checkpointer:
        state = two_step_graph().compile(checkpointer=checkpointer).get_state(config)
        assert state.values == {"steps": ["first", "second"]} and state.next == ()
        assert len(list(checkpointer.list(config))) == 4  # input, start, first, second


def test_an_older_postgres_schema_must_be_migrated_again(postgres_settings: Settings) -> None:
    migrate(postgres_settings)
    dsn = postgres_settings.agents.checkpoint_dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "DELETE FROM checkpoint_migrations WHERE v = (SELECT max(v) FROM checkpoint_migrations)"
        )
    with (
        pytest.raises(AgentStoreNotMigrated, match="schema version"),
        open_checkpointer(postgres_settings),
    ):
        pass
    migrate(postgres_settings)
    with open_checkpointer(postgres_settings):
        pass


def test_the_pool_is_configured_for_pgbouncer_and_recycles_connections(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(tmp_path),
            "AIPLATFORM_AGENTS_CHECKPOINT_DSN": postgres_url,
            "AIPLATFORM_AGENTS_POOL_MAX_SIZE": "3",
            "AIPLATFORM_AGENTS_POOL_MAX_IDLE_S": "60",
            "AIPLATFORM_AGENTS_POOL_MAX_LIFETIME_S": "600",
        }
    )
    migrate(settings)
    with open_checkpointer(settings) as checkpointer:
        pool = checkpointer.conn
        assert isinstance(pool, ConnectionPool) and isinstance(checkpointer, PostgresSaver)
        assert (pool.max_size, pool.max_idle, pool.max_lifetime) == (3, 60.0, 600.0)
        assert pool.kwargs == {
            "autocommit": True,
            "prepare_threshold": None,
            "row_factory": dict_row,
        }
        with pool.connection() as connection:
            assert connection.prepare_threshold is None
    assert pool.closed


def test_a_graph_finishes_and_persists_when_its_connections_are_killed_mid_run(
    postgres_settings: Settings, postgres_url: str
) -> None:
    migrate(postgres_settings)
    killed: list[int] = []
    config = {"configurable": {"thread_id": "survivor"}}
    with open_checkpointer(postgres_settings) as checkpointer:
        graph = two_step_graph(lambda: killed.append(terminate_connections(postgres_url)))
        result = graph.compile(checkpointer=checkpointer).invoke({"steps": []}, config)
        stats = checkpointer.conn.get_stats()
    assert killed[0] >= 1  # the pool's connection really was killed between the steps
    # ... and found dead: by the check at checkout, or by a call that failed and was retried
    assert stats.get("connections_lost", 0) + stats.get("returns_bad", 0) >= 1
    assert result == {"steps": ["first", "second"]}
    with open_checkpointer(postgres_settings) as checkpointer:
        state = two_step_graph().compile(checkpointer=checkpointer).get_state(config)
    assert state.values == {"steps": ["first", "second"]} and state.next == ()


def test_a_call_whose_connection_died_in_the_pool_is_retried_once(
    postgres_settings: Settings, postgres_url: str
) -> None:
    """Without the pool's check, a dead connection reaches the saver: the plain PostgresSaver
    fails, the project's retries on a fresh one."""
    migrate(postgres_settings)
    config = {"configurable": {"thread_id": "retried"}}
    with ConnectionPool(
        postgres_url,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
    ) as pool:
        pool.wait()
        saver = postgres_saver(pool)
        two_step_graph().compile(checkpointer=saver).invoke({"steps": []}, config)
        assert terminate_connections(postgres_url) == 1
        with pytest.raises(psycopg.OperationalError):
            PostgresSaver(pool).get_tuple(config)
        pool.wait()
        assert terminate_connections(postgres_url) == 1
        assert saver.get_tuple(config).checkpoint["channel_values"]["steps"] == ["first", "second"]
        assert terminate_connections(postgres_url) == 1
        assert len(list(saver.list(config))) == 4


def test_an_unreachable_postgres_is_named_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(tmp_path),
            "AIPLATFORM_AGENTS_CHECKPOINT_DSN": f"postgresql://u:s3cret@127.0.0.1:{port}/db",
        }
    )
    with pytest.raises(AgentStoreUnavailable) as error, open_checkpointer(settings):
        pass
    message = str(error.value)
    assert f"127.0.0.1:{port}/db" in message and "AIPLATFORM_AGENTS_CHECKPOINT_DSN" in message
    assert "s3cret" not in message
