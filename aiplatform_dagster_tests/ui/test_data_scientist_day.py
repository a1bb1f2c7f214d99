"""A data scientist's day in the Dagster web UI, in a real browser.

`dagster dev` (webserver and daemon) runs on loopback with a fresh DAGSTER_HOME, a fresh storage
folder and a copy of the sample corpus, prepared as `make dev` prepares them; Debian's Chromium,
driven by Playwright, clicks and types through it as a person would. Each step saves a
screenshot under ``test-artifacts/ui/`` (``AIPLATFORM_TEST_ARTIFACTS`` moves it); `make
screenshots` copies them to the README's tour.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR
from aiplatform_dagster_tests.dagster_dev import (
    BIN,
    MAKE_DEV,
    PROJECT_ROOT,
    dagster_dev,
    instance_home,
)
from aiplatform_dagster_tests.ui.dagster_ui import (
    SHOTS,
    DagsterUI,
    chromium,
    metadata_value,
    open_ui,
    wait_for_materialisations,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BINARY_FILE = "contracts/scanned_contract.txt"
NEW_DOCUMENT = "operations/quarterly_failover_drill.md"
NEW_DOCUMENT_TEXT = """# Quarterly failover drill

Every quarter the platform team runs the BLUEHERON failover drill: the primary region is
drained, traffic moves to the standby region, and the query API must keep answering within
its p95 latency objective. The drill ends with a written review within five working days.
"""


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    """The sample corpus, and a scan saved with a text extension that ingestion must skip."""
    folder = tmp_path / "documents"
    shutil.copytree(SAMPLE_CORPUS_DIR, folder)
    (folder / BINARY_FILE).parent.mkdir()
    (folder / BINARY_FILE).write_bytes(b"%PDF-1.4\x00\x01\x02 scanned pages")
    return folder


@pytest.fixture
def env(tmp_path: Path, documents: Path) -> dict[str, str]:
    return {
        **os.environ,
        **MAKE_DEV,
        "DAGSTER_HOME": str(instance_home(tmp_path / "dagster_home")),
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_DOCUMENTS_DIR": str(documents),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@pytest.fixture
def dagster_url(env: dict[str, str]) -> Iterator[str]:
    """`make dev`'s steps: the maintenance pass (pool limits), then `dagster dev`."""
    subprocess.run(
        [sys.executable, "-m", "aiplatform_dagster.defs.maintenance"],
        cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    with (
        open(SHOTS / "dagster_dev.log", "wb") as log,
        dagster_dev(["-w", "workspace.yaml"], env, output=log) as port,
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def ui(browser: Browser, dagster_url: str) -> Iterator[DagsterUI]:
    ui = open_ui(browser, dagster_url)
    yield ui
    ui.page.close()


def test_a_data_scientists_day_in_the_dagster_ui(
    ui: DagsterUI, documents: Path, env: dict[str, str]
) -> None:
    page = ui.page

    # A fresh browser is first asked to join the community.
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Join the Dagster community", timeout=120_000)
    ui.shot("00-community-dialog")
    dialog.get_by_role("button", name="Skip").click()
    expect(dialog).to_be_hidden()

    # The lineage: both groups, every group unfolded, the index release between them.
    ui.nav("Lineage")
    expect(page.locator("[aria-label=zoom_in]")).to_be_visible()  # the graph's controls are up
    page.locator("[aria-label=settings]").last.click()
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menuitem")).to_have_count(0)
    for name in ("ingestion", "evaluation", "training", "monitoring", "agents", "serving",
                 "index_release", "current_release", "retrieval_eval", "query_router_model",
                 "serving_release", "labelling_queue", "ingestion_scale_out",
                 "embedding_shards"):  # fmt: skip
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    ui.shot("01-lineage")

    # Materialise the ingestion group, follow the run, read its logs.
    page.locator(".CodeMirror").first.click()
    page.keyboard.type("group:ingestion")
    page.keyboard.press("Enter")
    expect(page.get_by_text("source_documents", exact=True).first).to_be_visible()
    expect(page.get_by_text("retrieval_eval", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Materialize all").click()
    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    assert ui.wait_for_run_end() == "Success"
    page.get_by_placeholder(re.compile("^Filter")).fill("Embedded")
    expect(page.get_by_text(re.compile(r"^Embedded \d+/\d+ new chunks$")).first).to_be_visible()
    ui.shot("02-run-logs")

    # Asset pages: skipped files, the chunk-length histogram, computed vs reused vectors,
    # the compute pool, checks, and the release with its manifest.
    ui.open_asset("source_documents")
    expect(page.get_by_text(BINARY_FILE)).to_be_visible()
    expect(page.get_by_text(re.compile("binary content"))).to_be_visible()
    ui.shot("03-source-documents")

    ui.open_asset("document_chunks")
    page.get_by_placeholder("Filter metadata keys").fill("chunk")
    expect(page.get_by_text("chunk_length_histogram")).to_be_visible()
    expect(page.get_by_text(re.compile("█")).first).to_be_visible()
    ui.shot("04-document-chunks")

    ui.open_asset("chunk_embeddings")
    for key in ("computed", "copied", "kept"):
        expect(page.get_by_role("cell", name=key, exact=True)).to_be_visible()
    page.get_by_text("Compute details").click()
    expect(page.locator("a[href$='/concurrency/gpu']")).to_be_visible()  # its pool
    profile = page.get_by_text(re.compile(r"aiplatform/compute-profile:?\s*gpu-t4"))
    expect(profile.first).to_be_visible()  # its Kubernetes compute profile, as an asset tag
    ui.shot("05-chunk-embeddings")
    page.get_by_role("tab", name="Checks").click()
    expect(page.get_by_text("embeddings_are_valid").first).to_be_visible()
    expect(page.get_by_text("Passed").first).to_be_visible()
    ui.shot("06-embedding-checks")

    ui.open_asset("index_release")
    for key in ("release_id", "predecessor", "segments", "manifest"):
        expect(page.get_by_role("cell", name=key, exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^r\d{8}T\d{9}-[0-9a-f]{6}$")).first).to_be_visible()
    ui.shot("07-index-release")

    # The new release is evaluated on its own (declarative automation): its scores, per mode.
    ui.open_asset("retrieval_eval")
    page.get_by_role("tab", name="Events").click()
    wait_for_materialisations(ui, count=1)
    page.get_by_role("tab", name="Overview").click()
    page.get_by_placeholder("Filter metadata keys").fill("summary")
    for mode in ("bm25", "dense", "hybrid", "routed"):
        expect(page.get_by_role("cell", name=mode, exact=True)).to_be_visible()
    ui.shot("08-evaluation")

    # A new document: the sensor starts a run that ingests it, and search finds it.
    (documents / NEW_DOCUMENT).write_text(NEW_DOCUMENT_TEXT)
    ui.nav("Runs")
    launched_by_sensor = page.get_by_text("new_documents_sensor", exact=True)
    expect(launched_by_sensor.first).to_be_visible(timeout=180_000)
    view = page.get_by_role("link", name="View", exact=True)
    page.locator("div").filter(has=launched_by_sensor).filter(has=view).last.get_by_role(
        "link", name="View", exact=True
    ).click()
    assert ui.wait_for_run_end() == "Success"
    ui.shot("09-sensor-run")
    search = subprocess.run(
        [BIN / "aiplatform", "search", "BLUEHERON failover drill", "-k", "3"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    assert NEW_DOCUMENT in search.stdout.split("\n 2.")[0], search.stdout

    # Evaluation over time: retrieval_eval re-ran for the new release; two points per plot.
    ui.open_asset("retrieval_eval")
    page.get_by_role("tab", name="Events").click()
    wait_for_materialisations(ui, count=2)
    page.get_by_role("tab", name="Overview").click()
    page.get_by_role("button", name="Plots").click()
    chart = page.get_by_text("golden/hybrid/ndcg@10", exact=True)
    chart.scroll_into_view_if_needed()
    expect(chart).to_be_visible()
    ui.shot("10-evaluation-plots")

    # What the API serves followed on its own: a serving release per index release, each
    # smoke-tested against the one before and flipped live.
    ui.open_asset("serving_release")
    page.get_by_role("tab", name="Events").click()
    wait_for_materialisations(ui, count=2)
    page.get_by_role("tab", name="Overview").click()
    for key in ("release_id", "index_release", "router", "reranker", "smoke_decision", "flip"):
        expect(page.get_by_role("cell", name=key, exact=True)).to_be_visible()
    expect(metadata_value(page, "smoke_decision")).to_contain_text("published: routed ndcg@10")
    expect(metadata_value(page, "flip")).to_have_text("2")
    ui.shot("27-serving-release")

    # Automation: the sensors and the schedule, with what each does.
    ui.nav("Automation")
    for name in ("new_documents_sensor", "evaluation_automation", "nightly_full_refresh",
                 "model_registry_sensor", "drift_retrain_sensor", "weekly_retrain",
                 "agent_escalations_sensor", "daily_checkpoint_retention", "serving_automation",
                 "serving_flips_sensor", "labelling_queue_sensor",
                 "scale_out_ingestion_sensor"):  # fmt: skip
        expect(page.get_by_role("link", name=re.compile(name))).to_be_visible()
    expect(page.get_by_text("Standard sensor")).to_have_count(7)  # the rows have loaded
    expect(page.get_by_text(re.compile("^Scheduled"))).to_have_count(3)
    ui.shot("11-automation")
    page.get_by_role("link", name=re.compile("new_documents_sensor")).click()
    expect(page.get_by_text(re.compile("one ingestion_job run per change"))).to_be_visible()
    expect(page.get_by_text(re.compile("^Loading ticks"))).to_have_count(0, timeout=60_000)
    ui.shot("12-new-documents-sensor")
