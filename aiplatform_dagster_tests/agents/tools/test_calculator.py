"""The calculator evaluates arithmetic from the syntax tree and refuses everything else."""

import math
import time

import pytest

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolInputError,
    ToolRefused,
    ToolRegistry,
    ToolRunner,
    ToolStatus,
)
from aiplatform_dagster.agents.tools.calculator import calculator_tool, evaluate

CONTEXT = ToolContext("thread-1", "tester", "step-1:0")


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("-(3 - 5)", 2),
        ("+4", 4),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(2.345, 2)", 2.35),
        ("round(2.5)", 2),
        ("min(3, 1, 2) + max(4, 5)", 6),
        ("floor(2.7) + ceil(2.1)", 5),
        ("log(e) + log(8, 2)", 4.0),
        ("exp(0)", 1.0),
        ("2 * pi", 2 * math.pi),
        ("1.5e3", 1500.0),
        ("10 ** 1000 // 10 ** 999", 10),
    ],
)
def test_arithmetic_is_evaluated(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('id')", "function \"__import__('os').system\" is not allowed"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("x + 1", "unknown name 'x': the constants are pi and e"),
        ("math.pi", "Attribute is not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("[1, 2][0]", "Subscript is not allowed"),
        ("'a' * 3", "only numbers are allowed, not 'a'"),
        ("True + 1", "only numbers are allowed, not True"),
        ("1j * 2", "only numbers are allowed, not 1j"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 if 2 else 3", "IfExp is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("~1", "UnaryOp is not allowed"),
        ("1 << 100", "BinOp is not allowed"),
        ("round(x=1)", "round() takes positional numbers only"),
        ("max(*[1, 2])", "max() takes positional numbers only"),
    ],
)
def test_anything_but_arithmetic_is_refused(expression: str, message: str) -> None:
    with pytest.raises(ToolRefused) as refused:
        evaluate(expression)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("(-8) ** 0.5", "not a real number"),
        ("9 ** 9 ** 9", "exponent 387420489 is too large"),
        ("2 ** 5000", "2**5000 is too large to compute"),
        ("10.0 ** 400", "has no value"),
        ("exp(1000)", "math range error"),
        ("1e308 * 10", "is not finite"),
        ("2 ** 4000 * 2 ** 4000", "exceeds 4096 bits"),
        ("min()", "has no value"),
        ("1 +", "not an arithmetic expression"),
        ("", "not an arithmetic expression"),
    ],
)
def test_arithmetic_without_a_value_is_bad_input(expression: str, message: str) -> None:
    with pytest.raises(ToolInputError) as bad:
        evaluate(expression)
    assert message in str(bad.value)


def test_huge_powers_are_refused_before_they_are_computed() -> None:
    started = time.monotonic()
    for expression in ("9 ** 9 ** 9", "2 ** 10000", "(10 ** 400) ** 400"):
        with pytest.raises(ToolInputError):
            evaluate(expression)
    assert time.monotonic() - started < 1


def test_the_tool_answers_and_refuses_through_the_runner() -> None:
    runner = ToolRunner(ToolRegistry([calculator_tool()]))

    answer = runner.call("calculator", {"expression": "(3 + 4) * 2"}, CONTEXT)
    refused = runner.call("calculator", '{"expression": "__import__(\'os\')"}', CONTEXT)
    too_long = runner.call("calculator", {"expression": "1+" * 300 + "1"}, CONTEXT)

    assert (answer.status, answer.content) == (ToolStatus.OK, "(3 + 4) * 2 = 14")
    assert answer.data == {"expression": "(3 + 4) * 2", "result": 14}
    assert refused.status is ToolStatus.REFUSED and "'__import__' is not allowed" in refused.content
    assert too_long.status is ToolStatus.INVALID_INPUT
    assert "expression: String should have at most 500 characters" in too_long.content
