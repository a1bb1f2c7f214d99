"""The registry check: every agent can run as written."""

import dagster as dg

from aiplatform_dagster.defs.agents.assets import agent_registry, registry_of
from aiplatform_dagster.defs.compute import CPU_SMALL, check_on_profile
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource


@dg.asset_check(asset=agent_registry, blocking=True, **check_on_profile(CPU_SMALL))
def agent_registry_is_consistent(platform: PlatformResource) -> dg.AssetCheckResult:
    """Every tool an agent lists exists and its permissions allow it; approvals name its own
    tools; delegates exist; a hierarchical agent names some.

    Blocking: an agent that would be refused its own tools on every call is not evaluated.
    """
    from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS

    registry = registry_of(platform.settings())
    problems = registry.problems(TOOL_PERMISSIONS)
    rows = [{"agent": p.agent, "problem": p.problem, "source": p.source} for p in problems]
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{p.agent}: {p.problem}" for p in problems)
        or f"{len(registry.agents)} agents: every tool exists and is permitted",
        metadata={
            "problem_count": len(problems),
            "problems": markdown_table(rows, limit=len(rows)),
        },
    )
