"""The shipped tools, and the permission each needs.

``TOOL_PERMISSIONS`` is importable without building anything (the agent registry's checks
read it); ``build_tool_registry`` builds the tools themselves. Expensive resources (the query
engine, the LLM client) are built on a tool's first call and shared by the registry's calls.
"""

from typing import TYPE_CHECKING

from aiplatform_dagster.agents.tools import calculator, http, knowledge_base, llm_call, reports, sql
from aiplatform_dagster.agents.tools.base import ToolRegistry
from aiplatform_dagster.config import Settings

if TYPE_CHECKING:
    from aiplatform_dagster.agents.tools.knowledge_base import QueryEngineFactory
    from aiplatform_dagster.models.llm import ChatClient

TOOL_PERMISSIONS: dict[str, str] = {
    module.NAME: module.PERMISSION
    for module in (knowledge_base, sql, calculator, http, llm_call, reports)
}
"""Tool name -> the permission an agent must hold to call it."""


def build_tool_registry(
    settings: Settings,
    *,
    query_engine_factory: "QueryEngineFactory | None" = None,
    llm: "ChatClient | None" = None,
) -> ToolRegistry:
    """Every shipped tool. ``query_engine_factory(settings)`` builds the knowledge base's
    engine (default: the platform's ``build_query_engine``); ``llm`` replaces the configured
    LLM's client for ``llm_call``."""
    return ToolRegistry(
        [
            knowledge_base.search_knowledge_base_tool(settings, query_engine_factory),
            sql.sql_query_tool(settings),
            calculator.calculator_tool(),
            http.http_get_tool(settings),
            llm_call.llm_call_tool(settings, llm),
            reports.publish_report_tool(settings),
        ]
    )
