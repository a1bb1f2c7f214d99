"""A data scientist trains the query path's models from the Dagster web UI, in a real browser.

As `make dev` prepares the platform, the guides are ingested from the command line into a first
index release, a real `mlflow server` runs (SQLite backend, artifacts in a temporary folder)
for the training assets to log to, and `dagster dev` starts. Through Chromium the data scientist
opens the training group in the lineage, launches it from the launchpad with run config that
points the labelled data at a small BEIR folder (guides asked for only by codenames, see
``mlops/codenames.py``), follows the run, reads the trained embedder's version and MLflow link,
clicks through to the run in the MLflow UI, reads the gate's decision and sees the registry
sensor report the alias moves. Screenshots continue ``test_data_scientist_day.py``'s tour (13-).
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from aiplatform_dagster_tests.dagster_dev import (
    BIN,
    MAKE_DEV,
    PROJECT_ROOT,
    dagster_dev,
    instance_home,
)
from aiplatform_dagster_tests.mlflow_server import _serve
from aiplatform_dagster_tests.mlops.codenames import write_codename_benchmark, write_guides
from aiplatform_dagster_tests.ui.dagster_ui import (
    SHOTS,
    DagsterUI,
    chromium,
    metadata_value,
    open_ui,
    reload_until_visible,
    select_event,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

INGEST_SECONDS = 600
"""Longest wait for `make ingest` of the guides: each step a process, most loading the model."""
TRAINING_SECONDS = 1200
"""Longest wait for the training run: each step a process loading the code location,
most of them loading the embedder, on two shared cores."""
TRAINING_GROUP = (
    "router_training_data", "query_router_model", "query_router_validation",
    "retrieval_training_pairs", "embedder_model", "candidate_release", "embedder_validation",
    "model_registry",
)  # fmt: skip


@pytest.fixture
def mlflow_url(tmp_path: Path) -> Iterator[str]:
    """`make dev`'s MLflow server: a SQLite backend and file artifacts, here in tmp."""
    folder = tmp_path / "mlflow"
    folder.mkdir()
    yield from _serve(f"sqlite:///{folder / 'mlflow.db'}", folder)


@pytest.fixture
def benchmark(tmp_path: Path) -> Path:
    """Labelled queries for training: each guide asked for by its codename only."""
    return write_codename_benchmark(tmp_path / "codenames")


@pytest.fixture
def env(tmp_path: Path, mlflow_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **MAKE_DEV,
        "DAGSTER_HOME": str(instance_home(tmp_path / "dagster_home")),
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_DOCUMENTS_DIR": str(write_guides(tmp_path / "guides")),
        "AIPLATFORM_MLFLOW_TRACKING_URI": mlflow_url,
        "AIPLATFORM_EMBEDDING_MODEL": "models:/embedder@champion",  # promotions reach queries
        "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@pytest.fixture
def dagster_url(env: dict[str, str]) -> Iterator[str]:
    """`make dev`'s steps: `make ingest` (the maintenance pass, then the ingestion group
    materialised from the command line: the guides become the first index release), then
    `dagster dev`."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open(SHOTS / "dagster_dev_training.log", "wb") as log:
        for command in (
            [sys.executable, "-m", "aiplatform_dagster.defs.maintenance"],
            [BIN / "dagster", "asset", "materialize", "-m", "aiplatform_dagster.definitions",
             "--select", "group:ingestion"],
        ):  # fmt: skip
            log.write(f"$ {' '.join(map(str, command))}\n".encode())
            log.flush()
            subprocess.run(
                command, cwd=PROJECT_ROOT, env=env, check=True, stdout=log,
                stderr=subprocess.STDOUT, timeout=INGEST_SECONDS,
            )  # fmt: skip
        with dagster_dev(["-w", "workspace.yaml"], env, output=log) as port:
            yield f"http://127.0.0.1:{port}"


@pytest.fixture
def ui(dagster_url: str) -> Iterator[DagsterUI]:
    with chromium() as browser:
        yield open_ui(browser, dagster_url)


def test_training_in_the_dagster_ui(ui: DagsterUI, benchmark: Path, mlflow_url: str) -> None:
    page = ui.page
    ui.skip_community_dialog()

    # The lineage, filtered to the training group: both loops and the registry.
    ui.nav("Lineage")
    expect(page.locator("[aria-label=zoom_in]")).to_be_visible()
    ui.filter_assets("group:training")
    for name in TRAINING_GROUP:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("source_documents", exact=True)).to_have_count(0)
    ui.shot("13-training-lineage")

    # Launch the group from the launchpad, the labelled data pointed at the codename benchmark.
    page.get_by_role("button", name="arrow_drop_down", exact=True).click()
    page.get_by_role("menuitem", name="Open launchpad").click()
    launchpad = page.get_by_role("dialog")
    editor = launchpad.locator(".CodeMirror").first
    expect(editor).to_contain_text("embedder_model")  # the scaffolded defaults
    labelled = f"{{benchmark_path: {benchmark}, dev_fraction: 0.3, min_dev_queries: 5}}"
    config = [  # flow style: the editor keeps each line's indent, which flow YAML ignores
        "{ops: {",
        f"router_training_data: {{config: {labelled}}},",
        f"retrieval_training_pairs: {{config: {labelled}}},",
        "embedder_model: {config: {epochs: 4, batch_size: 12, learning_rate: 0.0001}}",
        "}}",
    ]
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("\n".join(config))
    materialize = launchpad.get_by_role("button", name=re.compile("Materialize$"))
    expect(materialize).to_be_enabled()  # the edited config is checked
    expect(launchpad.get_by_text("No errors")).to_be_visible()
    ui.shot("14-training-launchpad")
    materialize.click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    assert ui.wait_for_run_end(TRAINING_SECONDS) == "Success"
    ui.shot("15-training-run")
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)

    # The trained embedder: its registered version and the MLflow run that made it.
    open_materialised(ui, "embedder_model", run_id)
    expect(metadata_value(page, "model_version")).to_have_text("2")  # v1: the serving MiniLM
    expect(metadata_value(page, "semver")).to_have_text("1.1.0")
    mlflow_run = metadata_value(page, "mlflow_run").get_by_role("link").first
    expect(mlflow_run).to_have_attribute(
        "href", re.compile(rf"^{re.escape(mlflow_url)}/#/experiments/\d+/runs/[0-9a-f]{{32}}$")
    )
    ui.shot("16-embedder-model")

    # One click to the MLflow UI (a new tab): the run, named and tagged by the asset and run.
    with page.context.expect_page() as opened:
        mlflow_run.click()
    mlflow_page = opened.value
    mlflow_page.set_viewport_size({"width": 1600, "height": 1000})
    heading = mlflow_page.get_by_role("heading", name=f"embedder_model-{run_id[:8]}")
    expect(heading).to_be_visible(timeout=60_000)
    expect(mlflow_page.get_by_text("dagster/asset_key").first).to_be_visible()
    expect(mlflow_page.get_by_text(re.compile(r"^Finished$")).first).to_be_visible()
    mlflow_page.screenshot(path=SHOTS / "17-mlflow-run.png")
    mlflow_page.close()

    # The gate: promoted, both dev scores side by side, the challenger ahead.
    open_materialised(ui, "embedder_validation", run_id)
    expect(metadata_value(page, "promoted")).to_have_text("true")
    expect(metadata_value(page, "baseline")).to_have_text("champion v1")
    challenger = float(metadata_value(page, "challenger_dev_ndcg@10").inner_text())
    baseline = float(metadata_value(page, "baseline_dev_ndcg@10").inner_text())
    assert challenger > baseline, (challenger, baseline)
    expect(metadata_value(page, "decision")).to_contain_text("promoted: dev hybrid nDCG@10")
    ui.shot("18-embedder-gate")

    # The registry sensor (every 30 s) reports each alias move: the gate's promotion is one.
    ui.open_asset("model_registry")
    page.get_by_role("tab", name="Events").click()
    promotion = re.compile(r"^embedder@champion: 1 -> 2 \(promote\): promoted: dev hybrid")
    select_event(ui, promotion, 180)
    expect(page.get_by_role("cell", name=f"dagster run {run_id}", exact=True)).to_be_visible()
    ui.shot("19-model-registry")


def open_materialised(ui: DagsterUI, key: str, run_id: str) -> None:
    """Open an asset's page and wait until it shows its latest materialisation, the one made by
    run ``run_id`` (its status links to that run). The catalog's cached asset status can lag a
    run that just ended (seen in CI: "Never materialized"), so reload as a user would."""
    ui.open_asset(key)
    made_by_run = ui.page.locator(f"a[href*='/runs/{run_id}']").first
    reload_until_visible(ui, made_by_run, 120, f"{key} materialised by run {run_id}")
