"""The shipped tools: their names and permissions, their schemas, and imports kept light."""

import json
import subprocess
import sys
from pathlib import Path

from aiplatform_dagster.agents.tools.base import ToolContext, ToolRunner, ToolStatus
from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS, build_tool_registry
from aiplatform_dagster.config import load_settings

HEAVY = ("pglast", "psycopg", "httpx", "openai", "torch", "sentence_transformers", "langgraph")


def test_every_shipped_tool_needs_its_documented_permission(tmp_path: Path) -> None:
    registry = build_tool_registry(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}))

    assert TOOL_PERMISSIONS == {
        "search_knowledge_base": "knowledge:read",
        "sql_query": "sql:read",
        "calculator": "math",
        "http_get": "web:read",
        "llm_call": "llm:call",
        "publish_report": "reports:write",
    }
    assert registry.permissions == TOOL_PERMISSIONS
    assert [name for name in registry if registry.get(name).side_effecting] == ["publish_report"]


def test_every_schema_forbids_unknown_arguments_and_serialises(tmp_path: Path) -> None:
    registry = build_tool_registry(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}))

    for name in registry:
        schema = json.loads(json.dumps(registry.get(name).openai_schema()))
        assert schema["function"]["name"] == name and schema["function"]["description"]
        parameters = schema["function"]["parameters"]
        assert parameters["type"] == "object" and parameters["additionalProperties"] is False
        assert parameters["required"], name


def test_a_registry_built_from_settings_runs_its_tools(tmp_path: Path) -> None:
    registry = build_tool_registry(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}))
    outcome = ToolRunner(registry).call(
        "calculator", {"expression": "2 ** 8"}, ToolContext("t", "analyst", "c")
    )
    assert (outcome.status, outcome.data["result"]) == (ToolStatus.OK, 256)


def test_building_the_registry_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from aiplatform_dagster.agents.tools.catalog import build_tool_registry\n"
        "from aiplatform_dagster.config import load_settings\n"
        f"build_tool_registry(load_settings({{'AIPLATFORM_STORAGE_DIR': {str(tmp_path)!r}}}))\n"
        f"print([name for name in {HEAVY!r} if name in sys.modules])\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
