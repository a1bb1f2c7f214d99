"""``calculator``: arithmetic for agents, evaluated from the syntax tree, never with ``eval``.

Models are unreliable at arithmetic, so they are given a tool; the tool must not become a way
to run code. The expression is parsed with ``ast`` and only numbers, the arithmetic operators,
a few math functions and the constants ``pi`` and ``e`` are evaluated; anything else (names,
attributes, subscripts, other calls) is refused. Sizes are bounded so that ``9**9**9`` or a
long chain of multiplications cannot pin a CPU or fill memory.
"""

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolInputError,
    ToolRefused,
    ToolSpec,
)

NAME = "calculator"
PERMISSION = "math"
MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4_096
"""Integer results stay below ~1,233 digits: exact enough, and cheap to compute and print."""

Number = int | float

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


class CalculatorInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
        description="Arithmetic, e.g. '(3 + 4) * 2 / sqrt(16)'. Operators + - * / // % **; "
        f"functions {', '.join(FUNCTIONS)}; constants pi, e.",
    )


def evaluate(expression: str) -> Number:
    """The value of ``expression``; raises ToolRefused for anything but arithmetic and
    ToolInputError for arithmetic that has no value (division by zero, sqrt(-1), overflow)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ToolInputError(f"not an arithmetic expression: {error.msg}") from None
    try:
        value = _eval(tree.body)
    except (ZeroDivisionError, ValueError, OverflowError, TypeError) as error:
        raise ToolInputError(f"{expression!r} has no value: {error}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolInputError(f"{expression!r} is not finite ({value})")
    return value


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolRefused(f"only numbers are allowed, not {node.value!r}")
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolRefused(f"unknown name {node.id!r}: the constants are pi and e")
    if isinstance(node, ast.Call):
        return _call(node)
    raise ToolRefused(
        f"{type(node).__name__} is not allowed: use numbers, + - * / // % **, parentheses, "
        f"the functions {', '.join(FUNCTIONS)} and the constants pi and e"
    )


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        name = ast.unparse(node.func)
        raise ToolRefused(f"function {name!r} is not allowed; the functions are {list(FUNCTIONS)}")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ToolRefused(f"{node.func.id}() takes positional numbers only")
    args = [_eval(arg) for arg in node.args]
    if node.func.id == "round" and len(args) == 2 and not isinstance(args[1], int):
        raise ToolInputError("round(x, digits) needs a whole number of digits")
    return _bounded(FUNCTIONS[node.func.id](*args))


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse powers whose result would be huge before computing them."""
    if abs(exponent) > MAX_EXPONENT:
        raise ToolInputError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
    fewest_bits = (base.bit_length() - 1) * exponent if isinstance(base, int) else 0
    if isinstance(exponent, int) and fewest_bits > MAX_INT_BITS:
        raise ToolInputError(f"{base}**{exponent} is too large to compute")


def _bounded(value: Any) -> Number:
    if isinstance(value, complex):
        raise ToolInputError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolInputError(f"an intermediate result exceeds {MAX_INT_BITS} bits")
    return value


def calculator_tool() -> ToolSpec:
    def run(arguments: CalculatorInput, context: ToolContext) -> dict[str, Any]:
        return {"expression": arguments.expression, "result": evaluate(arguments.expression)}

    return ToolSpec(
        name=NAME,
        description="Evaluate an arithmetic expression exactly (use it for any calculation).",
        permission=PERMISSION,
        input_model=CalculatorInput,
        run=run,
        parse_output=lambda raw: (f"{raw['expression']} = {raw['result']!r}", raw),
        timeout_s=2.0,
        max_retries=0,
    )
