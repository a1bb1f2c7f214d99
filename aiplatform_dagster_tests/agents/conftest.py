"""Agent test fixtures: the scripted model behind the fake OpenAI server, migrated stores in a
temporary storage folder, and registries written for one test."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiplatform_dagster.agents.checkpoints import migrate
from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster_tests.agents.scripted_model import scripted_agent_model
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def model_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chat_reply=scripted_agent_model) as server:
        yield server


@pytest.fixture
def agent_settings(tmp_path: Path, model_server: FakeOpenAIServer) -> SettingsFactory:
    """``agent_settings(**env)``: settings over the fake model and a migrated SQLite store."""

    def build(**env: str) -> Settings:
        settings = load_settings(
            {
                "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
                "AIPLATFORM_LLM_BASE_URL": model_server.base_url,
                "AIPLATFORM_LLM_MAX_RETRIES": "0",
                **env,
            }
        )
        migrate(settings)
        return settings

    return build


def write_registry(folder: Path, *agents: dict[str, Any]) -> Path:
    """A registry file of ``agents``; each gets a role unless it names one."""
    path = folder / "agents.yaml"
    entries = [{"role": f"You are {agent['name']}.", **agent} for agent in agents]
    path.write_text(yaml.safe_dump({"version": 1, "agents": entries}), encoding="utf-8")
    return path
