"""Tools that exist only in tests, to make a workflow fail, wait or lose its database."""

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from aiplatform_dagster.agents.tools.base import ToolContext, ToolError, ToolRegistry, ToolSpec
from aiplatform_dagster.agents.tools.catalog import build_tool_registry
from aiplatform_dagster.config import Settings


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


def spec(name: str, run: Any, **options: Any) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=f"test tool {name}",
        permission="test",
        input_model=NoInput,
        run=run,
        **options,
    )


def broken_tool() -> ToolSpec:
    """Always fails, permanently."""

    def run(arguments: NoInput, context: ToolContext) -> Any:
        raise ToolError("the backing service is down")

    return spec("broken", run, max_retries=0)


def slow_tool(seconds: float) -> ToolSpec:
    def run(arguments: NoInput, context: ToolContext) -> str:
        time.sleep(seconds)
        return f"slept {seconds} s"

    return spec("slow", run, timeout_s=seconds + 5, max_retries=0)


def gate_tool(opened: Path, reached: Path) -> ToolSpec:
    """Marks ``reached`` and blocks until ``opened`` exists: a test kills the process here."""

    def run(arguments: NoInput, context: ToolContext) -> str:
        reached.touch()
        while not opened.exists():
            time.sleep(0.05)
        return "gate passed"

    return spec("gate", run, timeout_s=120, max_retries=0)


def with_tools(settings: Settings, *extra: ToolSpec) -> ToolRegistry:
    """The shipped tools plus ``extra``."""
    shipped = build_tool_registry(settings)
    return ToolRegistry([*(shipped.get(name) for name in shipped), *extra])
