"""Human feedback and the labelling queue.

The API flags answers that need a human: low confidence (nothing matched, the answer cites no
source, or the LLM failed and the answer is extractive) or marked critical by a user (a rating
of 2 or less, or ``critical``). ``POST /v1/feedback`` records a rating, an optional corrected
answer and who labelled it; a corrected answer is a *label*: it takes the question off the queue
and becomes a reference answer for ``answer_eval``, beside the golden set.

Questions in the queue are kept in plain text (a labeller must read them), unlike the audit log.
Two append-only JSON-lines files under ``storage/serving/labelling/``, shared by the replicas on
the storage volume; each line is one write, so concurrent appends do not interleave.
"""

import json
import logging
import os
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiplatform_dagster.config import Settings
from aiplatform_dagster.rag.query.engine import Answer, AnswerKind

logger = logging.getLogger(__name__)
CRITICAL_RATING = 2
"""Ratings at or below this put the answer in the labelling queue."""


@dataclass(frozen=True)
class FlaggedQuery:
    request_id: str
    question: str
    answer: str
    release_id: str
    reason: str
    citations: list[str] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class Feedback:
    request_id: str
    rating: int
    """1 (wrong, harmful) to 5 (right and well sourced)."""
    labeller: str
    corrected_answer: str | None = None
    critical: bool = False
    note: str = ""
    question: str | None = None
    """Needed when the answer was not flagged (the API keeps no other plain-text question)."""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def is_label(self) -> bool:
        return bool(self.corrected_answer and self.corrected_answer.strip())

    @property
    def needs_label(self) -> bool:
        return self.critical or self.rating <= CRITICAL_RATING


@dataclass(frozen=True)
class QueueItem:
    request_id: str
    at: str
    reason: str
    question: str
    answer: str


@dataclass(frozen=True)
class Label:
    request_id: str
    question: str
    reference_answer: str
    labeller: str


def review_reason(answer: Answer) -> str | None:
    """Why an answer needs a human look, or None."""
    if answer.kind is AnswerKind.NO_SOURCES:
        return "low confidence: no indexed source matched"
    if answer.llm_failed:
        return "low confidence: the LLM failed, the answer is extractive"
    if answer.flagged:
        return "low confidence: the answer cites no source"
    return None


class FeedbackStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def flag(self, entry: FlaggedQuery) -> None:
        self._append("flagged.jsonl", asdict(entry))

    def add(self, feedback: Feedback) -> None:
        self._append("feedback.jsonl", asdict(feedback))

    def flagged(self) -> dict[str, FlaggedQuery]:
        return {row["request_id"]: FlaggedQuery(**row) for row in self._read("flagged.jsonl")}

    def feedback(self) -> list[Feedback]:
        return [Feedback(**row) for row in self._read("feedback.jsonl")]

    def queue(self) -> list[QueueItem]:
        """What waits for a label: flagged or critically rated answers with no corrected answer
        yet, oldest first."""
        flagged, feedback = self.flagged(), self.feedback()
        labelled = {item.request_id for item in feedback if item.is_label}
        items = {
            entry.request_id: QueueItem(
                entry.request_id, entry.at, entry.reason, entry.question, entry.answer
            )
            for entry in flagged.values()
        }
        for item in feedback:
            if item.needs_label and item.request_id not in items:
                known = flagged.get(item.request_id)
                why = "critical" if item.critical else f"rated {item.rating}"
                items[item.request_id] = QueueItem(
                    item.request_id, item.at, f"{why} by {item.labeller}",
                    item.question or (known.question if known else ""),
                    known.answer if known else "",
                )  # fmt: skip
        waiting = [item for request_id, item in items.items() if request_id not in labelled]
        return sorted(waiting, key=lambda item: item.at)

    def labels(self) -> list[Label]:
        """Corrected answers with their questions (from the flag, or from any feedback on the
        same request), the latest per request."""
        feedback = self.feedback()
        questions = {request_id: entry.question for request_id, entry in self.flagged().items()}
        questions |= {item.request_id: item.question for item in feedback if item.question}
        latest: dict[str, Label] = {}
        for item in feedback:
            question = questions.get(item.request_id)
            if item.is_label and question:
                latest[item.request_id] = Label(
                    item.request_id, question, item.corrected_answer or "", item.labeller
                )
        return list(latest.values())

    def mean_rating(self) -> float | None:
        ratings = [item.rating for item in self.feedback()]
        return statistics.fmean(ratings) if ratings else None

    def _append(self, name: str, row: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        descriptor = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)

    def _read(self, name: str) -> Iterator[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a torn line from a writer killed mid-append
                logger.warning("%s:%d is not a JSON line; skipped", path, number)


def open_feedback_store(settings: Settings) -> FeedbackStore:
    return FeedbackStore(settings.paths.storage_dir / "serving" / "labelling")
