"""A data scientist works with the agents from the Dagster web UI, in a real browser.

As `make dev` prepares it, the agent store is migrated, and `dagster dev` runs with an LLM
configured: the fake OpenAI server with the scripted tool-calling model (no LLM can be reached
here). The data scientist opens the agents group, materialises the registry and reads its
check, runs the evaluation suite through every mode, finds the thread a `reporter` run left
waiting for approval (started from the CLI) in `agent_escalations`, which the sensor refreshed,
and approves it from the launchpad of `resume_agent_thread`. Screenshots continue the tour (20-).
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from aiplatform_dagster_tests.agents.scripted_model import scripted_agent_model
from aiplatform_dagster_tests.dagster_dev import (
    BIN,
    MAKE_DEV,
    PROJECT_ROOT,
    dagster_dev,
    instance_home,
)
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer
from aiplatform_dagster_tests.ui.dagster_ui import (
    SHOTS,
    DagsterUI,
    chromium,
    metadata_value,
    open_ui,
    reload_until_visible,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

AGENTS_GROUP = ("agent_registry", "agent_eval", "agent_escalations", "checkpoint_retention")
REPORT_REQUEST = (
    "Publish the weekly summary. "
    'CALL publish_report {"title": "Weekly summary", "body": "All checks passed."}'
)


@pytest.fixture
def model_url() -> Iterator[str]:
    with FakeOpenAIServer(chat_reply=scripted_agent_model) as server:
        yield server.base_url


@pytest.fixture
def env(tmp_path: Path, model_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **MAKE_DEV,
        "DAGSTER_HOME": str(instance_home(tmp_path / "dagster_home")),
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_LLM_BASE_URL": model_url,
        "AIPLATFORM_LLM_MAX_RETRIES": "0",
    }


def aiplatform(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "aiplatform", *argv], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture
def dagster_url(env: dict[str, str]) -> Iterator[str]:
    """`make dev`'s steps for agents: migrate the store, then `dagster dev`."""
    assert aiplatform(env, "agent", "migrate").returncode == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    with (
        open(SHOTS / "dagster_dev_agents.log", "wb") as log,
        dagster_dev(["-w", "workspace.yaml"], env, output=log) as port,
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def ui(dagster_url: str) -> Iterator[DagsterUI]:
    with chromium() as browser:
        yield open_ui(browser, dagster_url)


def test_agents_in_the_dagster_ui(ui: DagsterUI, env: dict[str, str]) -> None:
    page = ui.page
    ui.skip_community_dialog()

    # The agents group in the lineage.
    ui.nav("Lineage")
    expect(page.locator("[aria-label=zoom_in]")).to_be_visible()
    ui.filter_assets("group:agents")
    for name in AGENTS_GROUP:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("source_documents", exact=True)).to_have_count(0)
    ui.shot("20-agents-lineage")

    # The registry: materialise it, read its agents and its blocking check.
    materialise_from_asset_page(ui, "agent_registry", recorded="agents")
    expect(metadata_value(page, "agents")).to_have_text("6")
    expect(page.get_by_role("cell", name="search_knowledge_base", exact=True)).to_be_visible()
    ui.shot("21-agent-registry")
    metadata_value(page, "agent_table").get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    for agent in ("researcher", "research_pool", "coordinator", "reporter"):
        expect(dialog.get_by_role("cell", name=agent, exact=True)).to_be_visible()
    ui.shot("22-agent-table")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("tab", name="Checks").click()
    expect(page.get_by_text("agent_registry_is_consistent").first).to_be_visible()
    expect(page.get_by_text("Passed").first).to_be_visible()

    # The evaluation suite through every mode, with the (fake) model configured.
    materialise_from_asset_page(ui, "agent_eval", recorded="success_rate")
    expect(metadata_value(page, "success_rate")).to_have_text("1")  # every task passed
    for mode in ("sequential", "parallel", "hierarchical"):
        expect(page.get_by_role("cell", name=mode, exact=True).first).to_be_visible()
    ui.shot("23-agent-eval")

    # A run from the CLI waits for approval; the sensor refreshes agent_escalations.
    started = aiplatform(env, "agent", "run", REPORT_REQUEST, "--agent", "reporter", "--json")
    assert started.returncode == 0, started.stderr
    waiting = json.loads(started.stdout)
    assert waiting["status"] == "waiting"
    thread_id = waiting["thread_id"]
    ui.open_asset("agent_escalations")
    reload_until_visible(
        ui, page.get_by_text(thread_id).first, 240, "the waiting thread in agent_escalations"
    )
    expect(page.get_by_text(re.compile("asks to call publish_report")).first).to_be_visible()
    ui.shot("24-agent-escalations")

    # Approve it from the launchpad of resume_agent_thread.
    ui.nav("Jobs")
    page.get_by_role("link", name=re.compile(r"\bresume_agent_thread$")).first.click()
    page.get_by_role("tab", name="Launchpad").click()
    editor = page.locator(".CodeMirror").first
    editor.click()
    page.keyboard.press("Control+a")
    config = [  # flow style: the editor keeps each line's indent, which flow YAML ignores
        "{ops: {resume_agent_thread_op: {config: {",
        f"thread_id: {thread_id},",
        "decision: approve,",
        "note: checked in the UI",
        "}}}}",
    ]
    page.keyboard.type("\n".join(config))
    launch = page.get_by_role("button", name="Launch run")
    expect(launch).to_be_enabled()
    ui.shot("25-resume-launchpad")
    launch.click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    assert ui.wait_for_run_end() == "Success"
    ui.shot("26-resume-run")
    reports = list((Path(env["AIPLATFORM_STORAGE_DIR"]) / "agents" / "reports").iterdir())
    assert len(reports) == 1 and "All checks passed." in reports[0].read_text()
    threads = aiplatform(env, "agent", "threads")
    assert f"{thread_id}  completed" in threads.stdout, threads.stdout


def materialise_from_asset_page(ui: DagsterUI, key: str, recorded: str) -> None:
    """Click Materialize on an asset's page, follow the run it launches until it succeeds,
    and come back to the asset page once it shows the metadata key ``recorded``."""
    page = ui.page
    ui.open_asset(key)
    page.get_by_role("button", name=re.compile(r"Materialize$")).first.click()
    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    assert ui.wait_for_run_end() == "Success"
    ui.open_asset(key)
    shown = page.get_by_role("cell", name=recorded, exact=True)
    reload_until_visible(ui, shown, 120, f"{key}'s metadata {recorded}")
