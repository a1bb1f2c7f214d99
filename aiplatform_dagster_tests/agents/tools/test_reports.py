"""publish_report writes each call's report once: a repeated call (a resumed node, a retry)
gets the first result back, marked replayed, and the file is not written again."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiplatform_dagster.agents.tools.base import ToolContext, ToolRegistry, ToolRunner, ToolStatus
from aiplatform_dagster.agents.tools.reports import publish_report_tool
from aiplatform_dagster.config import load_settings

CONTEXT = ToolContext("thread-1", "reporter", "step-3:0")


def runner_in(storage: Path) -> ToolRunner:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)})
    return ToolRunner(ToolRegistry([publish_report_tool(settings)]))


def reports(storage: Path) -> list[Path]:
    """Every file in the reports folder, temporary ones included."""
    return sorted((storage / "agents" / "reports").iterdir())


def test_a_report_is_written_under_the_calls_idempotency_key(tmp_path: Path) -> None:
    outcome = runner_in(tmp_path).call(
        "publish_report", {"title": "# Paging review", "body": "Pages escalate [a#0].\n"}, CONTEXT
    )

    path = tmp_path / "agents" / "reports" / f"{CONTEXT.idempotency_key}.md"
    assert outcome.status is ToolStatus.OK and not outcome.replayed
    assert path.read_text("utf-8") == "# Paging review\n\nPages escalate [a#0].\n"
    assert outcome.data["path"] == str(path) and outcome.data["title"] == "Paging review"
    assert outcome.data["bytes"] == path.stat().st_size
    assert (
        outcome.content
        == f"published report 'Paging review' to {path} ({path.stat().st_size} bytes)"
    )
    assert reports(tmp_path) == [path]


def test_the_same_call_again_replays_the_first_result_and_writes_nothing(tmp_path: Path) -> None:
    runner = runner_in(tmp_path)
    first = runner.call("publish_report", {"title": "Findings", "body": "First draft."}, CONTEXT)
    [path] = reports(tmp_path)
    written_at = path.stat().st_mtime_ns

    again = runner.call("publish_report", {"title": "Findings", "body": "Second draft."}, CONTEXT)

    assert again.status is ToolStatus.OK and again.replayed and not first.replayed
    assert again.data == first.data
    assert "already published by this call" in again.content
    assert reports(tmp_path) == [path] and path.stat().st_mtime_ns == written_at
    assert path.read_text("utf-8") == "# Findings\n\nFirst draft.\n"


def test_different_calls_write_different_reports(tmp_path: Path) -> None:
    runner = runner_in(tmp_path)
    other_call = ToolContext("thread-1", "reporter", "step-4:0")
    other_thread = ToolContext("thread-2", "reporter", "step-3:0")

    outcomes = [
        runner.call("publish_report", {"title": f"Report {n}", "body": "text"}, context)
        for n, context in enumerate((CONTEXT, other_call, other_thread))
    ]

    assert not any(outcome.replayed for outcome in outcomes)
    assert len(reports(tmp_path)) == 3
    assert {Path(o.data["path"]).read_text("utf-8").splitlines()[0] for o in outcomes} == {
        "# Report 0",
        "# Report 1",
        "# Report 2",
    }


def test_concurrent_repeats_of_one_call_write_it_once(tmp_path: Path) -> None:
    runner = runner_in(tmp_path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(
            pool.map(
                lambda n: runner.call("publish_report", {"title": "T", "body": f"{n}"}, CONTEXT),
                range(8),
            )
        )

    assert [outcome.replayed for outcome in outcomes].count(False) == 1
    assert len({outcome.data["sha256"] for outcome in outcomes}) == 1
    assert len(reports(tmp_path)) == 1


def test_a_title_must_be_one_line_of_text(tmp_path: Path) -> None:
    runner = runner_in(tmp_path)

    two_lines = runner.call("publish_report", {"title": "a\nb", "body": "x"}, CONTEXT)
    only_hashes = runner.call("publish_report", {"title": "## ", "body": "x"}, CONTEXT)

    assert two_lines.status is only_hashes.status is ToolStatus.INVALID_INPUT
    assert "title: Value error, must be a single line" in two_lines.content
    assert "must have some text" in only_hashes.content
    assert not (tmp_path / "agents").exists()
