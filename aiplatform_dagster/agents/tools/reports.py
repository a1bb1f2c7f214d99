"""``publish_report``: the one side-effecting tool, writing a markdown report once per call.

The effect is keyed by the call's idempotency key (thread and call id), and the file name is
that key: a node resumed after a crash, or a retry after a timeout, finds the report already
written and gets the first result back with ``replayed=True`` instead of writing again. The
file is written to a temporary name and moved into place with ``os.replace``, so a reader, or a
crash mid-write, never sees half a report. Calls in one process are serialised by a lock; two
processes racing on one key (the same call, so the same checkpointed arguments) write the same
bytes, so whichever move lands last changes nothing.
"""

import hashlib
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiplatform_dagster.agents.tools.base import ToolContext, ToolOutcome, ToolSpec, ToolStatus
from aiplatform_dagster.config import Settings
from aiplatform_dagster.rag.index.atomic import write_atomically

NAME = "publish_report"
PERMISSION = "reports:write"
MAX_BODY_CHARS = 200_000

_write_lock = threading.Lock()


class ReportInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200, description="One line, without '#'.")
    body: str = Field(
        min_length=1,
        max_length=MAX_BODY_CHARS,
        description="The report in markdown, with the citations of its findings.",
    )

    @field_validator("title")
    @classmethod
    def _one_line(cls, title: str) -> str:
        if "\n" in title or "\r" in title:
            raise ValueError("must be a single line")
        title = title.strip().lstrip("#").strip()
        if not title:
            raise ValueError("must have some text besides '#' and spaces")
        return title


def reports_dir(settings: Settings) -> Path:
    return settings.paths.storage_dir / "agents" / "reports"


def publish(folder: Path, report: ReportInput, context: ToolContext) -> ToolOutcome:
    """Write the report under the call's key, or return what the first call wrote."""
    path = folder / f"{context.idempotency_key}.md"
    with _write_lock:
        if path.exists():
            return _outcome(path, context, replayed=True)
        text = f"# {report.title}\n\n{report.body.strip()}\n"
        write_atomically(path, lambda pending: pending.write_text(text, encoding="utf-8"))
    return _outcome(path, context, replayed=False)


def _outcome(path: Path, context: ToolContext, replayed: bool) -> ToolOutcome:
    content = path.read_bytes()
    title = content.decode("utf-8").splitlines()[0].removeprefix("# ")
    data: dict[str, Any] = {
        "path": str(path),
        "title": title,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "idempotency_key": context.idempotency_key,
    }
    if replayed:
        text = f"report {title!r} was already published by this call to {path}; not written again"
    else:
        text = f"published report {title!r} to {path} ({len(content)} bytes)"
    return ToolOutcome(NAME, ToolStatus.OK, text, data=data, replayed=replayed)


def publish_report_tool(settings: Settings) -> ToolSpec:
    folder = reports_dir(settings)

    def run(arguments: ReportInput, context: ToolContext) -> ToolOutcome:
        return publish(folder, arguments, context)

    return ToolSpec(
        name=NAME,
        description="Publish a markdown report (title and body) to the platform's reports "
        "folder. Publishing the same call again does not write a second report.",
        permission=PERMISSION,
        input_model=ReportInput,
        run=run,
        side_effecting=True,
    )
