"""``sql_query``: read-only SQL against the configured PostgreSQL, in two independent guards.

1. The statement allow-list. The query is parsed by PostgreSQL's own parser (pglast), never
   matched with a regex, and only one SELECT is accepted: plain, with set operations,
   subqueries, or a WITH whose every CTE is a SELECT. Any other statement anywhere in the tree
   (``WITH x AS (DELETE ... RETURNING *) SELECT ...``), SELECT INTO, locking clauses and every
   function or operator not on an allow-list of pure ones (``nextval``, ``set_config``,
   ``pg_terminate_backend``, ``lo_import``, ``dblink_exec``, any user function) are refused,
   naming what was refused; nothing is sent to the server.
2. A READ ONLY transaction with a ``statement_timeout``: whatever slips past the list (a view
   or an overloaded operator that calls a writing function) cannot write and cannot run long.

Neither guard replaces a database role that may only SELECT what agents should see: point
AIPLATFORM_AGENTS_SQL_DSN at such a role. COALESCE, NULLIF, GREATEST, LEAST and CASE are SQL
syntax rather than function calls, so they need no entry on the list.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolError,
    ToolInputError,
    ToolRefused,
    ToolSpec,
    TransientToolError,
)
from aiplatform_dagster.config import AgentSettings, Settings

NAME = "sql_query"
PERMISSION = "sql:read"
DSN_VARIABLE = AgentSettings.variable("sql_dsn")
MAX_QUERY_CHARS = 20_000
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 10.0
MAX_CELL_CHARS = 200
"""Longer values are cut in the text the model reads (``data`` keeps them whole)."""

PURE_FUNCTIONS = {
    "aggregates": "count sum avg min max bool_and bool_or every string_agg array_agg json_agg "
    "jsonb_agg json_object_agg jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop "
    "var_samp corr covar_pop covar_samp regr_slope regr_intercept regr_r2 regr_count "
    "percentile_cont percentile_disc mode bit_and bit_or",
    "window": "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value "
    "last_value nth_value",
    "strings": "lower upper length char_length character_length octet_length substring substr "
    "btrim trim ltrim rtrim position strpos replace concat concat_ws left right lpad rpad "
    "initcap repeat reverse split_part starts_with translate format md5 regexp_replace "
    "regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_count "
    "regexp_like similar_to_escape overlay ascii chr to_char to_number normalize is_normalized "
    "string_to_array array_to_string",
    "math": "abs ceil ceiling floor round trunc sqrt cbrt power exp ln log log10 mod sign div "
    "degrees radians pi sin cos tan asin acos atan atan2 width_bucket gcd lcm",
    "date and time": "now statement_timestamp transaction_timestamp date_trunc date_part "
    "extract age make_date make_time make_timestamp make_timestamptz make_interval "
    "justify_days justify_hours justify_interval isfinite to_date to_timestamp date_bin "
    "timezone overlaps",
    "arrays and sets": "array_length cardinality unnest array_position array_positions "
    "array_append array_prepend array_cat array_remove array_replace array_lower array_upper "
    "array_dims generate_series",
    "json": "to_json to_jsonb json_build_object jsonb_build_object json_build_array "
    "jsonb_build_array row_to_json json_array_length jsonb_array_length json_typeof "
    "jsonb_typeof json_extract_path json_extract_path_text jsonb_extract_path "
    "jsonb_extract_path_text json_array_elements jsonb_array_elements json_array_elements_text "
    "jsonb_array_elements_text json_each jsonb_each json_each_text jsonb_each_text "
    "json_object_keys jsonb_object_keys",
    "nulls and types": "num_nulls num_nonnulls pg_typeof",
}
"""Pure functions by kind: they read their arguments and nothing else, and change nothing."""
ALLOWED_FUNCTIONS = frozenset(name for names in PURE_FUNCTIONS.values() for name in names.split())

BUILTIN_OPERATORS = (
    "+ - * / % ^ |/ ||/ @ & | # << >> ~ = <> != < > <= >= || ~~ ~~* !~~ !~~* ~* !~ !~* "
    "@> <@ && -> ->> #> #>> #- ? ?| ?& @? @@"
)
ALLOWED_OPERATORS = frozenset(BUILTIN_OPERATORS.split())
"""Any other operator (a user-defined one calls a user function) is refused."""

SQL_OPERATOR_KINDS = frozenset({"AEXPR_OP", "AEXPR_OP_ANY", "AEXPR_OP_ALL"})
"""A_Expr kinds that name an operator; the others (IN, LIKE, BETWEEN...) are fixed syntax."""

STATEMENT_NAMES = {
    "VariableSetStmt": "SET",
    "VariableShowStmt": "SHOW",
    "CreateStmt": "CREATE TABLE",
}
"""Parse-tree names that do not read as the SQL; the others do once split (AlterTableStmt)."""


class SqlInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="One PostgreSQL SELECT statement (WITH, JOIN, UNION and subqueries are "
        "fine; writes, locks and non-pure functions are refused). Add LIMIT for large tables.",
    )


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    """JSON-able values: numbers, text, booleans, None; dates and times as ISO text."""
    truncated: bool
    """More rows matched than were fetched."""


def check_read_only(query: str) -> None:
    """Raise ToolRefused unless ``query`` is one SELECT of allowed functions and operators
    (ToolInputError when it does not parse); nothing is sent to any server."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        statements = parse_sql(query)
    except ParseError as error:
        raise ToolInputError(f"not valid PostgreSQL: {error}") from None
    if len(statements) != 1:
        raise ToolRefused(f"send exactly one statement, not {len(statements)}")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise ToolRefused(f"only SELECT is allowed, not {_statement_name(statement)}")
    for node in _nodes(statements[0]):
        problem = _problem(node, ast)
        if problem:
            raise ToolRefused(f"refused: {problem}; only reading SELECTs are allowed")


def _nodes(root: Any) -> list[Any]:
    from pglast.visitors import Visitor

    class Collector(Visitor):
        def __init__(self) -> None:
            self.nodes: list[Any] = []

        def visit(self, ancestors: Any, node: Any) -> None:
            self.nodes.append(node)

    collector = Collector()
    collector(root)
    return collector.nodes


def _problem(node: Any, ast: Any) -> str | None:
    """Why ``node`` may not appear in a read-only query, or None."""
    kind = type(node).__name__
    if kind.endswith("Stmt") and kind not in ("SelectStmt", "RawStmt"):
        return f"{_statement_name(node)} statement nested in the query"
    if isinstance(node, ast.SelectStmt) and node.intoClause is not None:
        return "SELECT INTO creates a table"
    if isinstance(node, ast.LockingClause):
        return "locking clauses (FOR UPDATE / FOR SHARE) take row locks"
    if isinstance(node, ast.ParamRef):
        return f"parameter ${node.number} has no value: write the value into the query"
    if isinstance(node, ast.FuncCall):
        name = _qualified(node.funcname)
        if not _allowed(name, ALLOWED_FUNCTIONS):
            return f"function {'.'.join(name)}() is not on the allow-list of pure functions"
    if isinstance(node, ast.A_Expr) and node.kind.name in SQL_OPERATOR_KINDS:
        name = _qualified(node.name)
        if not _allowed(name, ALLOWED_OPERATORS):
            return f"operator {'.'.join(name)} is not a built-in operator on the allow-list"
    return None


def _qualified(parts: Sequence[Any]) -> list[str]:
    return [part.sval for part in parts]


def _allowed(name: list[str], allowed: frozenset[str]) -> bool:
    """Unqualified, or qualified with ``pg_catalog``, and on the list."""
    *schema, base = name
    return schema in ([], ["pg_catalog"]) and base.lower() in allowed


def _statement_name(node: Any) -> str:
    kind = type(node).__name__
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", kind.removesuffix("Stmt"))
    return STATEMENT_NAMES.get(kind) or words.upper()


def execute_read_only(
    dsn: str, query: str, max_rows: int, statement_timeout_s: float = STATEMENT_TIMEOUT_S
) -> QueryResult:
    """Run ``query`` in a READ ONLY transaction, fetching ``max_rows`` rows at most.

    The rows come through a server-side cursor, so a query matching millions of rows costs
    ``max_rows`` of them, not all. This is the second guard: it does not check the statement
    (``check_read_only`` does), and the transaction is rolled back whatever happens.
    """
    import psycopg
    from psycopg import errors

    try:
        with psycopg.connect(
            dsn,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="aiplatform-agent-sql",
            prepare_threshold=None,
        ) as connection:
            connection.read_only = True
            try:
                timeout_ms = max(1, math.ceil(statement_timeout_s * 1000))
                connection.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                with connection.cursor(name="agent_sql_query") as cursor:
                    cursor.execute(query)
                    columns = [column.name for column in cursor.description or ()]
                    rows = cursor.fetchmany(max_rows + 1)
            finally:
                connection.rollback()
    except errors.ReadOnlySqlTransaction as error:
        raise ToolRefused(f"refused by the read-only transaction: {_first_line(error)}") from None
    except errors.InsufficientPrivilege as error:
        raise ToolRefused(f"the database refused: {_first_line(error)}") from None
    except errors.QueryCanceled:
        raise ToolInputError(
            f"the query ran past {statement_timeout_s:g} s and was cancelled: filter, aggregate "
            "or LIMIT it"
        ) from None
    except psycopg.OperationalError as error:
        raise TransientToolError(
            f"the database could not be reached: {_first_line(error)}"
        ) from None
    except psycopg.Error as error:
        raise ToolInputError(f"the database rejected the query: {_first_line(error)}") from None
    return QueryResult(
        columns,
        [[_jsonable(value) for value in row] for row in rows[:max_rows]],
        len(rows) > max_rows,
    )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def format_result(result: QueryResult) -> str:
    """A markdown table the model reads, saying when rows were left out."""
    if not result.columns:
        return "The query returned no columns."
    lines = [
        "| " + " | ".join(result.columns) + " |",
        "|" + "---|" * len(result.columns),
        *("| " + " | ".join(_cell(value) for value in row) + " |" for row in result.rows),
    ]
    count = f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    if result.truncated:
        count = f"truncated: the first {count} of more; aggregate or add LIMIT to see the rest"
    return "\n".join([*lines, f"({count})"])


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def sql_query_tool(settings: Settings) -> ToolSpec:
    agents = settings.agents

    def run(arguments: SqlInput, context: ToolContext) -> QueryResult:
        check_read_only(arguments.query)
        if agents.sql_dsn is None:
            raise ToolError(
                f"sql_query has no database: set {DSN_VARIABLE} to a PostgreSQL DSN of a role "
                "that may only read what agents should see"
            )
        return execute_read_only(
            agents.sql_dsn.get_secret_value(), arguments.query, agents.sql_max_rows
        )

    def parse(result: QueryResult) -> tuple[str, dict[str, Any]]:
        data = {"columns": result.columns, "rows": result.rows, "truncated": result.truncated}
        return format_result(result), data

    return ToolSpec(
        name=NAME,
        description="Run one read-only PostgreSQL SELECT on the operations database and get "
        f"the rows back (at most {agents.sql_max_rows}).",
        permission=PERMISSION,
        input_model=SqlInput,
        run=run,
        parse_output=parse,
        timeout_s=CONNECT_TIMEOUT_S + STATEMENT_TIMEOUT_S + 5,
    )
