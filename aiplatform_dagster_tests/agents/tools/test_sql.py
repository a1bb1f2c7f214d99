"""sql_query on the machine's real PostgreSQL: SELECTs answer, writes are refused by the statement
allow-list before anything is sent, and what slips past the list meets a read-only transaction."""

from collections.abc import Iterator

import psycopg
import pytest

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolInputError,
    ToolRefused,
    ToolRegistry,
    ToolRunner,
    ToolStatus,
)
from aiplatform_dagster.agents.tools.sql import check_read_only, execute_read_only, sql_query_tool
from aiplatform_dagster.config import load_settings
from aiplatform_dagster_tests.postgres import temporary_database

CONTEXT = ToolContext("thread-1", "analyst", "step-1:0")


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    """A database with 12 orders, a sequence, and a function that writes."""
    with temporary_database("agent_sql") as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                "CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(8, 2))"
            )
            connection.execute(
                "INSERT INTO orders SELECT g, 'customer ' || (g % 3), g * 10.5 "
                "FROM generate_series(1, 12) g"
            )
            connection.execute("CREATE SEQUENCE order_ids")
            connection.execute(
                "CREATE FUNCTION add_order() RETURNS int LANGUAGE sql AS "
                "$$ INSERT INTO orders VALUES (100, 'sneaky', 1) RETURNING id $$"
            )
        yield url


def table_state(dsn: str) -> tuple[int, int]:
    """(orders, the sequence's last value): what any write would change."""
    with psycopg.connect(dsn) as connection:
        orders = connection.execute("SELECT count(*) FROM orders").fetchone()[0]
        sequence = connection.execute("SELECT last_value FROM order_ids").fetchone()[0]
    return orders, sequence


def runner_for(dsn: str | None, max_rows: int = 5) -> ToolRunner:
    environ = {"AIPLATFORM_AGENTS_SQL_MAX_ROWS": str(max_rows)}
    if dsn:
        environ["AIPLATFORM_AGENTS_SQL_DSN"] = dsn
    return ToolRunner(ToolRegistry([sql_query_tool(load_settings(environ))]))


def test_a_select_returns_its_rows_as_a_table(dsn: str) -> None:
    query = (
        "SELECT customer, count(*) AS orders, sum(amount) AS total FROM orders "
        "GROUP BY customer ORDER BY customer"
    )
    outcome = runner_for(dsn).call("sql_query", {"query": query}, CONTEXT)

    assert outcome.status is ToolStatus.OK, outcome.content
    assert outcome.data == {
        "columns": ["customer", "orders", "total"],
        "rows": [
            ["customer 0", 4, 315.0],
            ["customer 1", 4, 231.0],
            ["customer 2", 4, 273.0],
        ],
        "truncated": False,
    }
    assert outcome.content.splitlines() == [
        "| customer | orders | total |",
        "|---|---|---|",
        "| customer 0 | 4 | 315.0 |",
        "| customer 1 | 4 | 231.0 |",
        "| customer 2 | 4 | 273.0 |",
        "(3 rows)",
    ]


def test_rows_past_the_limit_are_not_fetched_and_the_result_says_so(dsn: str) -> None:
    outcome = runner_for(dsn, max_rows=5).call(
        "sql_query", {"query": "SELECT id FROM orders ORDER BY id"}, CONTEXT
    )

    assert outcome.status is ToolStatus.OK
    assert outcome.data["rows"] == [[1], [2], [3], [4], [5]] and outcome.data["truncated"]
    assert "truncated: the first 5 rows of more" in outcome.content


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "WITH big AS (SELECT * FROM orders WHERE amount > 50) SELECT count(*) FROM big",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
        "SELECT i FROM n",
        "SELECT id FROM orders UNION SELECT id FROM orders EXCEPT SELECT 3",
        "SELECT * FROM orders WHERE id IN (SELECT id FROM orders WHERE customer LIKE 'c%')",
        "SELECT customer, rank() OVER (ORDER BY sum(amount) DESC) FROM orders GROUP BY customer",
        "SELECT extract(year FROM now()), date_trunc('day', now()) AT TIME ZONE 'UTC'",
        "SELECT coalesce(NULL, 1), nullif(1, 2), greatest(1, 2), least(1, 2), "
        "CASE WHEN true THEN upper('a') END",
        "SELECT pg_catalog.lower(customer), substring(customer FROM 1 FOR 3) FROM orders",
        "SELECT g FROM generate_series(1, 3) g",
        "SELECT '{\"a\": 1}'::jsonb ->> 'a', round(avg(amount), 2)::text FROM orders",
        "VALUES (1), (2)",
    ],
)
def test_reading_queries_pass_the_allow_list(query: str) -> None:
    check_read_only(query)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("INSERT INTO orders VALUES (50, 'x', 1)", "only SELECT is allowed, not INSERT"),
        ("UPDATE orders SET amount = 0", "only SELECT is allowed, not UPDATE"),
        ("DELETE FROM orders", "only SELECT is allowed, not DELETE"),
        (
            "MERGE INTO orders o USING orders p ON o.id = p.id WHEN MATCHED THEN DELETE",
            "only SELECT is allowed, not MERGE",
        ),
        (
            "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
            "DELETE statement nested in the query",
        ),
        (
            "WITH added AS (INSERT INTO orders VALUES (51, 'x', 1) RETURNING id) SELECT 1",
            "INSERT statement nested in the query",
        ),
        (
            "SELECT * FROM (SELECT 1) s WHERE EXISTS (WITH u AS (UPDATE orders SET amount = 0 "
            "RETURNING 1) SELECT * FROM u)",
            "UPDATE statement nested in the query",
        ),
        ("SELECT * INTO copy_of_orders FROM orders", "SELECT INTO creates a table"),
        ("SELECT * FROM orders FOR UPDATE", "locking clauses"),
        ("SELECT * FROM (SELECT * FROM orders FOR SHARE) s", "locking clauses"),
        ("SELECT 1; DELETE FROM orders", "send exactly one statement, not 2"),
        ("SELECT nextval('order_ids')", "function nextval() is not on the allow-list"),
        ("SELECT pg_terminate_backend(1)", "function pg_terminate_backend()"),
        ("SELECT set_config('search_path', 'x', false)", "function set_config()"),
        ("SELECT lo_import('/etc/passwd')", "function lo_import()"),
        ("SELECT dblink_exec('host=x', 'DROP TABLE orders')", "function dblink_exec()"),
        ("SELECT pg_sleep(60)", "function pg_sleep()"),
        ("SELECT count(*) FROM orders WHERE add_order() > 0", "function add_order()"),
        ("SELECT public.lower('A')", "function public.lower()"),
        ("SELECT * FROM pg_read_file('/etc/passwd')", "function pg_read_file()"),
        ("SELECT 1 === 2", "operator === is not a built-in operator"),
        ("SELECT 1 OPERATOR(public.+) 2", "operator public.+ is not a built-in operator"),
        ("SELECT $1", "parameter $1 has no value"),
        ("CREATE TABLE t (id int)", "only SELECT is allowed, not CREATE TABLE"),
        ("CREATE TABLE t AS SELECT 1", "only SELECT is allowed, not CREATE TABLE AS"),
        ("COPY orders TO '/tmp/orders.csv'", "only SELECT is allowed, not COPY"),
        ("EXPLAIN ANALYZE DELETE FROM orders", "only SELECT is allowed, not EXPLAIN"),
        ("DO $$ BEGIN DELETE FROM orders; END $$", "only SELECT is allowed, not DO"),
        ("SET statement_timeout = 0", "only SELECT is allowed, not SET"),
        ("-- nothing but a comment", "send exactly one statement, not 0"),
    ],
)
def test_anything_that_writes_locks_or_calls_an_unlisted_function_is_refused(
    query: str, reason: str
) -> None:
    with pytest.raises(ToolRefused) as refused:
        check_read_only(query)
    assert reason in str(refused.value)


def test_refused_queries_never_reach_the_database(dsn: str) -> None:
    before = table_state(dsn)
    runner = runner_for(dsn)
    for query in (
        "DELETE FROM orders",
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        "SELECT nextval('order_ids')",
        "SELECT add_order()",
    ):
        outcome = runner.call("sql_query", {"query": query}, CONTEXT)
        assert outcome.status is ToolStatus.REFUSED and outcome.attempts == 1, query
    assert table_state(dsn) == before


def test_a_write_that_slips_past_the_list_is_stopped_by_the_read_only_transaction(
    dsn: str,
) -> None:
    before = table_state(dsn)

    with pytest.raises(ToolRefused, match="read-only transaction"):
        execute_read_only(dsn, "SELECT add_order()", max_rows=10)
    with pytest.raises(ToolRefused, match="read-only transaction"):
        execute_read_only(dsn, "SELECT nextval('order_ids')", max_rows=10)

    assert table_state(dsn) == before


def test_a_slow_query_is_cancelled_by_the_statement_timeout(dsn: str) -> None:
    with pytest.raises(ToolInputError, match=r"ran past 0.2 s and was cancelled"):
        execute_read_only(dsn, "SELECT pg_sleep(5)", max_rows=1, statement_timeout_s=0.2)


def test_a_query_the_database_rejects_comes_back_as_bad_input(dsn: str) -> None:
    outcome = runner_for(dsn).call("sql_query", {"query": "SELECT nope FROM orders"}, CONTEXT)

    assert outcome.status is ToolStatus.INVALID_INPUT
    assert 'the database rejected the query: column "nope" does not exist' in outcome.content


def test_without_a_dsn_the_tool_says_which_variable_to_set() -> None:
    runner = runner_for(None)

    missing = runner.call("sql_query", {"query": "SELECT 1"}, CONTEXT)
    refused = runner.call("sql_query", {"query": "DELETE FROM orders"}, CONTEXT)

    assert missing.status is ToolStatus.FAILED and missing.attempts == 1
    assert "set AIPLATFORM_AGENTS_SQL_DSN" in missing.content
    assert refused.status is ToolStatus.REFUSED
