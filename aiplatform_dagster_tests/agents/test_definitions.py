"""The agent registry: the shipped one is consistent; bad YAML is refused saying where."""

from pathlib import Path

import pytest

from aiplatform_dagster.agents.definitions import RegistryError, load_registry
from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS
from aiplatform_dagster_tests.agents.conftest import write_registry


def test_the_shipped_registry_has_every_mode_and_no_problems():
    registry = load_registry()
    assert {agent.mode.value for agent in registry} == {"sequential", "parallel", "hierarchical"}
    assert registry.problems(TOOL_PERMISSIONS) == []


def test_unknown_and_forbidden_tools_and_delegates_are_problems(tmp_path: Path):
    path = write_registry(
        tmp_path,
        {"name": "typo", "tools": ["calculater"], "permissions": ["math"]},
        {"name": "greedy", "tools": ["sql_query"], "permissions": ["math"]},
        {"name": "boss", "mode": "hierarchical", "delegates": ["nobody"]},
    )
    problems = {(p.agent, p.problem) for p in load_registry(path).problems(TOOL_PERMISSIONS)}
    assert any(a == "typo" and "unknown tool 'calculater'" in p for a, p in problems)
    assert any(a == "greedy" and "permission 'sql:read'" in p for a, p in problems)
    assert any(a == "boss" and "unknown agent 'nobody'" in p for a, p in problems)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version: 1\nagents: [\n", "not readable YAML"),
        (
            "agents:\n  - name: a\n    role: r\n    limits: {max_tokens: 0}\n",
            "field limits.max_tokens",
        ),
        ("agents:\n  - name: a\n    role: r\n    tolls: [calculator]\n", "field tolls"),
        ("agents:\n  - role: r\n", "agent #1: field name"),
        ("agents:\n  - name: a\n    role: r\n  - name: a\n    role: s\n", "already defined"),
        ("agent: []\n", "expected `version: 1` and a list `agents:`"),
    ],
)
def test_a_malformed_registry_names_the_file_the_agent_and_the_field(
    tmp_path: Path, content: str, expected: str
):
    path = tmp_path / "agents.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RegistryError) as raised:
        load_registry(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_folder_registry_reads_every_file_and_a_missing_path_says_how_to_fix_it(tmp_path: Path):
    (tmp_path / "one").mkdir()
    write_registry(tmp_path / "one", {"name": "first"})
    (tmp_path / "one" / "more.yml").write_text("agents:\n  - name: second\n    role: r\n")
    assert [a.name for a in load_registry(tmp_path / "one")] == ["first", "second"]
    with pytest.raises(RegistryError, match="AIPLATFORM_AGENTS_REGISTRY"):
        load_registry(tmp_path / "missing.yaml")
