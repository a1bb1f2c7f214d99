"""An answer without an LLM: the whole source sentences most similar to the question.

It keeps the RAG loop usable (and its citations testable) on a laptop with no model endpoint,
and it is what every user without an LLM reads, so it must read as prose: only sentences that
stand on their own are quoted (never a heading, a bracketed aside, a fragment cut off at a
chunk boundary, or a list stem ending in ':' without its list), ranked by BM25 similarity to
the question, shown in document order within each source and cited once per source. Sentences
are quoted verbatim (markup aside), so the answer is only as good as retrieval, never invented.
"""

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiplatform_dagster.rag.index.text_analysis import analyze
from aiplatform_dagster.rag.query.context import Context
from aiplatform_dagster.rag.query.preprocess import names_term
from aiplatform_dagster.rag.query.prompts import NO_ANSWER

NOTHING_MATCHES = f"{NO_ANSWER}: none of the retrieved sources matches the question."
DEFAULT_PASSAGES = 3
DEFAULT_MAX_WORDS = 150

_FENCE = re.compile(r"^\s*(?:```|~~~)")
_UNDERLINE = re.compile(r"^\s*([=\-~^*])\1{2,}\s*$")
_TABLE_RULE = re.compile(r"^\s*[-=]{3,}(?:\s+[-=]{3,})+\s*$")
"""The rule under a plain-text table's header ("-------  -------")."""
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_TABLE_ROW = re.compile(r"^\s*\|")
_FIELD = re.compile(r"^[A-Z][\w /-]{0,30}:\s+\S.*[^.!?:\s]\s*$")
"""A "Label: value" line ("VM size: Standard_NC24ads_A100_v4"): quotable, though unpunctuated."""
_LABEL = re.compile(r"^\s*[A-Z][\w -]{0,20}:\s")
"""A line opening with a label ("Fix: ...") starts a new paragraph."""
_ENDS_LINE = re.compile(r"[.!?:,;][\"'”’)\]]*\s*$")
MIN_UNPUNCTUATED_LINE_WORDS = 9
"""A lone line without end punctuation is a heading when shorter, else a statement (an HTML
list item: "GPU driver and the NVIDIA device plugin are installed by the AKS GPU image")."""
_ITEM = re.compile(r"^(\s*)([-*+•]|\d{1,2}[.)])\s+(?=\S)")
_EMPHASIS = re.compile(r"\*\*|__|`")
# A sentence ends at . ! or ? (closing quotes or brackets may follow) before whitespace and a
# capital, a digit or an opening quote or bracket.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|approx|incl|Mr|Ms|Dr|No|Fig)|\b[A-Z])\.$")
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]]*$")
_ANAPHORIC = re.compile(r"^(?:This|That|These|Those|It|They|Such|Here|There)\b")
ANAPHORA_DISCOUNT = 0.5
"""A sentence opening with "This"/"It" leans on the one before it: it ranks lower alone."""
SOURCE_RANK_DISCOUNT = 0.3
"""Retrieval ranked the sources: a passage of source n counts 1 / (1 + 0.3 (n - 1))."""
EXACT_TERM_BOOST = 2.0
_BM25_K1, _BM25_B = 1.2, 0.75


@dataclass
class _Block:
    """A paragraph, list item, heading or other line group of a source's text."""

    kind: str  # "text", "item", "line", "heading", "table" or "other"
    lines: list[str]
    indent: int = 0
    marker: str = ""

    @property
    def text(self) -> str:
        return " ".join(_EMPHASIS.sub("", " ".join(self.lines)).split())


@dataclass(frozen=True)
class Passage:
    """One quotable unit of a source: a whole sentence, or a list stem with its items."""

    order: int
    text: str
    items: tuple[str, ...] = ()
    heading: str = ""
    """The heading the passage sits under: never quoted, but it says what the passage is about."""

    @property
    def rendered(self) -> str:
        return "\n".join((self.text, *self.items))


@dataclass(frozen=True)
class _Candidate:
    source: int
    passage: Passage
    terms: list[str] = field(repr=False)


def extractive_answer(
    question: str,
    context: Context,
    count: int = DEFAULT_PASSAGES,
    max_words: int = DEFAULT_MAX_WORDS,
    exact_terms: Sequence[str] = (),
) -> str:
    """Up to ``count`` passages most similar to ``question`` (within ``max_words`` unless
    the first is longer), in source order and document order, each source cited once.

    Similarity is BM25 over the passages at hand, the heading above a passage counting as
    part of it; a passage naming every exact term of the question (a code, a version) counts
    double, and a passage of a lower-ranked source a little less.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    candidates = _candidates(context)
    similarity = _bm25(set(analyze(question)), [c.terms for c in candidates])
    scores = [
        score * _weight(candidate, exact_terms)
        for score, candidate in zip(similarity, candidates, strict=True)
    ]
    ranked = sorted(
        (i for i, score in enumerate(scores) if score > 0),
        key=lambda i: (-scores[i], candidates[i].source, candidates[i].passage.order),
    )
    chosen = _within_budget([candidates[i] for i in ranked], count, max_words)
    if not chosen:
        return NOTHING_MATCHES
    by_source: dict[int, list[Passage]] = {}
    for candidate in sorted(chosen, key=lambda c: (c.source, c.passage.order)):
        by_source.setdefault(candidate.source, []).append(candidate.passage)
    return "\n\n".join(f"{_join(passages)} [{number}]" for number, passages in by_source.items())


def passages(text: str) -> list[Passage]:
    """The quotable passages of one source's text, in document order."""
    blocks = _blocks(text)
    found: list[Passage] = []
    heading = ""
    index = 0
    while index < len(blocks):
        block = blocks[index]
        index += 1
        if block.kind == "heading":
            heading = block.text.lstrip("# ")
            continue
        if block.kind == "line":
            sentences = [block.text] if _starts_sentence(block.text) else []
        elif block.kind in ("item", "text"):
            sentences = _sentences(block.text)
        else:
            continue
        for position, sentence in enumerate(sentences, start=1):
            if sentence.endswith(":") and position == len(sentences) and block.kind == "text":
                items, index = _list_after(blocks, index)
                if items and _starts_sentence(sentence):
                    found.append(Passage(len(found), sentence, tuple(items), heading))
            elif block.kind == "line" or _standalone(sentence):
                found.append(Passage(len(found), sentence, heading=heading))
    return found


def _candidates(context: Context) -> list[_Candidate]:
    """Every passage of every source, each distinct text once (first source wins)."""
    seen: set[str] = set()
    candidates = []
    for source in context.sources:
        for passage in passages(source.chunk.text):
            key = " ".join(passage.rendered.split()).casefold()
            if key not in seen:
                seen.add(key)
                terms = analyze(f"{passage.heading}\n{passage.rendered}")
                candidates.append(_Candidate(source.number, passage, terms))
    return candidates


def _weight(candidate: _Candidate, exact_terms: Sequence[str]) -> float:
    """What multiplies a passage's similarity besides its words (see ``extractive_answer``)."""
    passage = candidate.passage
    weight = 1.0 / (1.0 + SOURCE_RANK_DISCOUNT * (candidate.source - 1))
    if _ANAPHORIC.match(passage.text):
        weight *= ANAPHORA_DISCOUNT
    named = f"{passage.heading}\n{passage.rendered}"
    if exact_terms and all(names_term(named, term) for term in exact_terms):
        weight *= EXACT_TERM_BOOST
    return weight


def _bm25(query: set[str], documents: Sequence[list[str]]) -> list[float]:
    """BM25 of each passage against the question, with document frequencies over the passages
    at hand."""
    if not documents:
        return []
    average = sum(map(len, documents)) / len(documents) or 1.0
    frequency = Counter(term for terms in documents for term in set(terms) & query)
    scores = []
    for terms in documents:
        counts = Counter(terms)
        norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * len(terms) / average)
        score = sum(
            math.log(1 + (len(documents) - frequency[t] + 0.5) / (frequency[t] + 0.5))
            * counts[t]
            * (_BM25_K1 + 1)
            / (counts[t] + norm)
            for t in query
            if counts[t]
        )
        scores.append(score)
    return scores


def _within_budget(ranked: list[_Candidate], count: int, max_words: int) -> list[_Candidate]:
    """The best passages, at most ``count``, while their words fit ``max_words``."""
    chosen: list[_Candidate] = []
    words = 0
    for candidate in ranked:
        length = len(candidate.passage.rendered.split())
        if chosen and words + length > max_words:
            continue
        chosen.append(candidate)
        words += length
        if len(chosen) == count:
            break
    return chosen


def _join(selected: list[Passage]) -> str:
    """Sentences run on as one paragraph; a list, or a line without end punctuation, stands
    on its own lines."""
    lines: list[str] = []
    run_on = False
    for passage in selected:
        sentence = not passage.items and _ENDS_SENTENCE.search(passage.text) is not None
        if run_on and sentence:
            lines[-1] += " " + passage.text
        else:
            lines.append(passage.rendered)
        run_on = sentence
    return "\n".join(lines)


def _blocks(text: str) -> list[_Block]:
    """Split a source's text into paragraphs, list items, headings and other lines.

    Hard-wrapped lines join into one paragraph; a list item takes the more indented lines
    below it; a line underlined with ===/--- or marked with # is a heading.
    """
    blocks: list[_Block] = []
    current: _Block | None = None
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line) or in_fence:
            in_fence = in_fence != bool(_FENCE.match(line))
            blocks.append(_Block("other", [line]))
            current = None
        elif not line.strip():
            current = None
        elif _TABLE_RULE.match(line):
            if blocks and blocks[-1].kind == "text":
                blocks[-1].kind = "table"
            current = blocks[-1] if blocks and blocks[-1].kind == "table" else None
        elif _UNDERLINE.match(line):
            if blocks and blocks[-1].kind == "text" and len(blocks[-1].lines) == 1:
                blocks[-1].kind = "heading"
            current = None
        elif _MARKDOWN_HEADING.match(line) or _TABLE_ROW.match(line) or _FIELD.match(line):
            kind = "heading" if _MARKDOWN_HEADING.match(line) else "other"
            blocks.append(_Block("line" if _FIELD.match(line) else kind, [line]))
            current = None
        elif item := _ITEM.match(line):
            current = _Block("item", [line[item.end() :]], len(item.group(1)), item.group(2))
            blocks.append(current)
        elif current is not None and _continues(current, line):
            current.lines.append(line)
        else:
            if current is not None and _defines(current, line):
                current.kind = "heading"
            current = _Block("text", [line], _indent(line))
            blocks.append(current)
    for block in blocks:
        if block.kind == "text" and len(block.lines) == 1 and not _ENDS_LINE.search(block.text):
            long = len(block.text.split()) >= MIN_UNPUNCTUATED_LINE_WORDS
            block.kind = "line" if long else "heading"
    return blocks


def _continues(block: _Block, line: str) -> bool:
    """Whether ``line`` carries on ``block``: a list item takes the more indented lines under
    it, a table the lines as indented as its header; a paragraph takes wrapped lines, but not
    a new "Label:" at its own indent, nor the indented body under an unpunctuated first line
    that is not a label (a term and its definition)."""
    indent = _indent(line)
    if block.kind == "table":
        return indent >= block.indent
    if block.kind == "item":
        return indent > block.indent
    if block.kind != "text" or (indent == block.indent and _LABEL.match(line)):
        return False
    return not _defines(block, line)


def _defines(term: _Block, line: str) -> bool:
    """Whether ``line`` is the indented body under ``term``, an unpunctuated one-line
    paragraph that is not a label ("AIP-4031  Embedding dimension mismatch"): the term is
    then the heading of its body."""
    first = term.lines[0]
    return (
        term.kind == "text"
        and len(term.lines) == 1
        and _indent(line) > term.indent
        and not _ENDS_LINE.search(first)
        and not _LABEL.match(first)
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _list_after(blocks: list[_Block], index: int) -> tuple[list[str], int]:
    """The list a stem introduces (its items, as marked in the source), or the one paragraph
    or code line it introduces; and the index of the block after them."""
    items = []
    while index < len(blocks) and blocks[index].kind == "item":
        cut = index == len(blocks) - 1 and not _ENDS_LINE.search(blocks[index].text)
        if not cut:  # the chunk ends inside this item
            items.append(f"{_marker(blocks[index].marker)} {blocks[index].text}")
        index += 1
    if not items and index < len(blocks) and blocks[index].kind in ("text", "other"):
        items.append(blocks[index].text)
        index += 1
    return items, index


def _marker(marker: str) -> str:
    """Numbered items keep their number; bullets of any kind become "-"."""
    return marker if marker[0].isdigit() else "-"


def _sentences(text: str) -> list[str]:
    """Split a paragraph into sentences, not after an abbreviation or an initial."""
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        head = text[start : end.start() + 1]
        if _ABBREVIATION.search(head):
            continue
        sentences.append(text[start : end.end()].strip())
        start = end.end()
    tail = text[start:].strip()
    return [*sentences, tail] if tail else sentences


def _standalone(sentence: str) -> bool:
    """A whole sentence that can be quoted alone: it starts like one, ends like one, has a few
    words and is not a bracketed aside."""
    return (
        _starts_sentence(sentence)
        and _ENDS_SENTENCE.search(sentence) is not None
        and not sentence.startswith(("(", "["))
        and len(sentence.split()) >= 3
    )


def _starts_sentence(sentence: str) -> bool:
    """Not a fragment cut at a chunk boundary: the first letter is not lower case."""
    first = next((char for char in sentence if char.isalnum()), "")
    return bool(first) and not first.islower()
