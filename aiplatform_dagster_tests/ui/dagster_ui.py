"""What the browser tests of the Dagster UI share: Debian's Chromium driven by Playwright, the
pages a user visits reached by clicking, and where screenshots go (``test-artifacts/ui/``;
``AIPLATFORM_TEST_ARTIFACTS`` moves it)."""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from aiplatform_dagster_tests.dagster_dev import PROJECT_ROOT, wait_until

CHROMIUM = Path(os.environ.get("AIPLATFORM_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("AIPLATFORM_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
SHOTS = ARTIFACTS / "ui"
RUN_SECONDS = 420
"""Longest wait for one run: the first build loads the model in every step process."""
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_STATUS = "query RunStatus($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
MATERIALISATIONS = """query Materialisations($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) { ... on Asset { assetMaterializations { runId } } }
}"""
EVENT_TIME = re.compile(r"^[A-Z][a-z]{2} \d+, \d+:\d\d [AP]M$")


class DagsterUI:
    """The pages a user visits, reached by clicking as a user does."""

    def __init__(self, page: Page, url: str, shots: Path) -> None:
        self.page = page
        self.url = url
        self.shots = shots

    def shot(self, name: str) -> None:
        self.page.screenshot(path=self.shots / f"{name}.png")

    def nav(self, name: str) -> None:
        """Click an entry of the left navigation (other links share its names)."""
        self.page.locator("a[class*=MainNavigation_link]", has_text=name).click()

    def open_asset(self, key: str) -> None:
        """Find the asset in the catalog by its key, as a user does once the catalog lists more
        assets than fit the window (its list renders only the rows in view)."""
        self.nav("Catalog")
        self.filter_assets(f'key:"{key}"')
        self.page.get_by_role("link", name=re.compile(rf"^{key}\b")).first.click()
        expect(self.page).to_have_url(re.compile(rf"/assets/{key}"))

    def skip_community_dialog(self) -> None:
        """A fresh instance first asks to join the community; a user skips it."""
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_contain_text("Join the Dagster community", timeout=120_000)
        dialog.get_by_role("button", name="Skip").click()
        expect(dialog).to_be_hidden()

    def filter_assets(self, selection: str) -> None:
        """Type an asset selection into the graph's or the catalog's search (CodeMirror)."""
        self.page.locator(".CodeMirror").first.click()
        self.page.keyboard.type(selection)
        self.page.keyboard.press("Enter")

    def wait_for_run_end(self, seconds: float = RUN_SECONDS) -> str:
        """On a run's page: wait until it ends; return the status it then shows (Success,
        Failure or Canceled).

        While the run goes on the page is left for a blank one and the run's status is asked
        of the webserver's GraphQL API, as the UI itself asks it: the live run page (its log
        and Gantt chart redrawn on every event) kept Chromium's renderer busy on most of a
        core, which the run's own steps need on a two-core machine."""
        run_page = self.page.url
        run_id = re.search(r"/runs/([0-9a-f-]{36})", run_page).group(1)
        graphql = f"{self.url}/graphql"
        self.page.goto("about:blank")
        wait_until(
            lambda: run_status(self.page, graphql, run_id) in ENDED, seconds, f"run {run_id} ending"
        )
        self.page.goto(run_page)
        status = self.page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
        expect(status).to_be_visible()
        return status.inner_text()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (never `playwright install`)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (CI's .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def open_ui(browser: Browser, url: str) -> DagsterUI:
    """A new page on the Dagster UI at ``url``, once `dagster dev` serves it."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    expect.set_options(timeout=30_000)
    wait_until(lambda: serves(page, url), 180, "the Dagster UI serving the location")
    return DagsterUI(page, url, SHOTS)


def ask(page: Page, graphql: str, query: str, **variables: object) -> dict:
    """One GraphQL query to the webserver, as the UI's own pages send them."""
    response = page.request.post(graphql, data={"query": query, "variables": variables})
    assert response.ok, f"{graphql}: HTTP {response.status}"
    return response.json()["data"]


def run_status(page: Page, graphql: str, run_id: str) -> str:
    """A run's status (QUEUED, STARTED, SUCCESS, ...) as the webserver reports it."""
    return ask(page, graphql, RUN_STATUS, id=run_id)["runOrError"]["status"]


def materialisations(page: Page, graphql: str, key: list[str]) -> int:
    """How many materialisations the asset ``key`` has (0 before its first)."""
    asset = ask(page, graphql, MATERIALISATIONS, path=key)["assetOrError"]
    return len(asset.get("assetMaterializations", []))


def serves(page: Page, url: str) -> bool:
    try:
        page.goto(url, timeout=10_000)
    except Exception:  # connection refused while dagster dev starts
        return False
    return True


def reload_until_visible(ui: DagsterUI, target: Locator, seconds: float, what: str) -> None:
    """Reload the page until ``target`` shows: what a daemon or sensor writes appears only on a
    fresh page."""

    def shown() -> bool:
        try:
            expect(target).to_be_visible(timeout=15_000)
        except AssertionError:
            ui.page.reload()
            return False
        return True

    wait_until(shown, seconds, what)


def listed_events(page: Page) -> Locator:
    """An asset's Events tab lists one entry per materialisation, each headed by its time (the
    selected one's time is repeated in a span)."""
    return page.get_by_text(EVENT_TIME).and_(page.locator("div"))


def wait_for_materialisations(ui: DagsterUI, count: int, seconds: float = RUN_SECONDS) -> None:
    """On an asset's Events tab: wait until the asset has ``count`` materialisations, asking
    the GraphQL API as ``wait_for_run_end`` does (a blank page meanwhile), then see them listed."""
    events_page = ui.page.url
    key = re.search(r"/assets/([^?#]+)", events_page).group(1).split("/")
    graphql = f"{ui.url}/graphql"
    ui.page.goto("about:blank")
    wait_until(
        lambda: materialisations(ui.page, graphql, key) >= count,
        seconds,
        f"{count} materialisations of {'/'.join(key)}",
    )
    ui.page.goto(events_page)
    expect(listed_events(ui.page).nth(count - 1)).to_be_visible()


def select_event(ui: DagsterUI, description: re.Pattern[str], seconds: float) -> None:
    """On an asset's Events tab: click through the listed materialisations, newest first, until
    one whose description matches is shown; reload and start again until one is listed."""
    shown = ui.page.get_by_text(description)

    def selected() -> bool:
        entries = listed_events(ui.page)
        expect(entries.first).to_be_visible()
        for index in range(entries.count()):
            entries.nth(index).click()
            try:
                expect(shown).to_be_visible(timeout=3_000)
            except AssertionError:
                continue
            return True
        ui.page.reload()
        return False

    wait_until(selected, seconds, f"a materialisation described {description.pattern!r}")


def metadata_value(page: Page, key: str) -> Locator:
    """The value cell of ``key`` in an asset page's metadata table."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    return row.get_by_role("cell").last
