"""Turn the [n] markers of an answer into document citations, and catch invented ones.

A model sometimes cites a number it was never given, or nothing at all. Such a marker points at
nothing, so it is removed from the text; either way the answer is flagged for review instead of
shown as grounded (an "I don't know" needs no citation).
"""

import re
from dataclasses import dataclass

from aiplatform_dagster.rag.query.context import Context
from aiplatform_dagster.rag.query.prompts import NO_ANSWER

# "[1]", "[1, 2]", "[1-3]", "[1,3–4]"; "[1][2]" is two markers.
_MARKER = re.compile(r"[ \t]*\[(\s*\d+\s*(?:[-–,]\s*\d+\s*)*)\]")
_ITEM = re.compile(r"(\d+)\s*(?:[-–]\s*(\d+))?")
# A range wider than this is not a citation range but a typo or a year span.
_MAX_RANGE = 20
_NO_ANSWER_FORMS = (NO_ANSWER.lower(), NO_ANSWER.lower().replace("'", "\u2019"), "i do not know")


@dataclass(frozen=True, slots=True)
class Citation:
    number: int
    doc_id: str
    title: str
    source_path: str
    chunk_id: str
    position: int


@dataclass(frozen=True, slots=True)
class CitedAnswer:
    """The answer with only real citations left, and what was wrong with it: ``flagged`` when
    it cited a source it was not given or cites none at all (``uncited``)."""

    text: str
    citations: list[Citation]
    invalid_citations: list[int]
    flagged: bool
    uncited: bool


def resolve_citations(answer: str, context: Context) -> CitedAnswer:
    """Map markers to sources, dropping numbers the context does not have."""
    cited: dict[int, Citation] = {}
    invalid: dict[int, None] = {}

    def rewrite(marker: re.Match[str]) -> str:
        numbers = _numbers(marker.group(1))
        valid = [n for n in numbers if context.source(n) is not None]
        for number in numbers:
            if number in valid:
                cited.setdefault(number, _citation(context, number))
            else:
                invalid.setdefault(number)
        if len(valid) == len(numbers):
            return marker.group(0)
        if not valid:
            return ""
        leading = marker.group(0)[: marker.start(1) - marker.start(0) - 1]
        return f"{leading}[{', '.join(map(str, dict.fromkeys(valid)))}]"

    text = _MARKER.sub(rewrite, answer)
    uncited = not cited and not is_no_answer(text)
    return CitedAnswer(
        text=text,
        citations=list(cited.values()),
        invalid_citations=list(invalid),
        flagged=bool(invalid) or uncited,
        uncited=uncited,
    )


def is_no_answer(answer: str) -> bool:
    """True for the prompt's "I don't know" reply (any apostrophe, any emphasis)."""
    start = answer.lstrip(" \t\n\"'*_>").lower()
    return start.startswith(_NO_ANSWER_FORMS)


def _numbers(marker: str) -> list[int]:
    """Cited numbers in marker order; "2-4" expands to 2, 3, 4."""
    numbers: list[int] = []
    for item in _ITEM.finditer(marker):
        low = int(item.group(1))
        high = int(item.group(2)) if item.group(2) else low
        if low <= high <= low + _MAX_RANGE:
            numbers.extend(range(low, high + 1))
        else:
            numbers.extend((low, high))
    return numbers


def _citation(context: Context, number: int) -> Citation:
    chunk = context.sources[number - 1].chunk
    return Citation(
        number=number,
        doc_id=chunk.doc_id,
        title=chunk.title,
        source_path=chunk.source_path,
        chunk_id=chunk.chunk_id,
        position=chunk.position,
    )
