"""Query preprocessing: one normalised form for display, caching and routing.

Users paste queries from chat, PDFs and terminals, so the same question arrives with
different Unicode forms, stray control characters and whitespace. Normalising once here
means the cache key, the router and the retrievers all see the same text. The router also
needs to know whether a query names something that must match verbatim (an ID, a date, a
version, a quoted phrase), because dense retrieval blurs exactly those.
"""

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MAX_CHARS = 2000


class QueryError(ValueError):
    """The query cannot be searched (for example, it is empty)."""


class Script(StrEnum):
    """The writing system most of a query's letters use."""

    LATIN = "latin"
    CYRILLIC = "cyrillic"
    GREEK = "greek"
    ARABIC = "arabic"
    HEBREW = "hebrew"
    CJK = "cjk"
    MIXED = "mixed"
    OTHER = "other"
    """A script not listed here, or no letters at all."""


@dataclass(frozen=True)
class PreparedQuery:
    """A normalised query and the features routing and caching need."""

    text: str
    """Normalised, case kept: what is searched, sent to the LLM and shown back to the user."""
    truncated: bool
    exact_terms: list[str]
    """IDs, codes, identifiers, file names, dates and versions, as written."""
    quoted_phrases: list[str]
    word_count: int
    script: Script


# Whitespace and format characters that carry meaning in some scripts survive: ZWNJ and ZWJ
# shape Persian, Indic and emoji text. Other control/format characters (NUL, BOM, zero-width
# spaces, lone surrogates) only break matching and encoding.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_KEPT_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})
_WHITESPACE = re.compile(r"\s+")

_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|„([^“”]+)[“”]|«([^»]+)»')

_FILE_EXTENSIONS = (
    "py|ipynb|js|jsx|ts|tsx|java|kt|go|rs|c|h|cc|cpp|hpp|cs|rb|php|sh|bash|ps1|sql|proto|tf|"
    "json|yaml|yml|toml|ini|cfg|conf|env|lock|xml|html|css|md|rst|txt|log|csv|tsv|parquet|"
    "pdf|doc|docx|xls|xlsx|ppt|pptx|png|jpg|jpeg|svg|zip|gz|tar"
)
# One alternation, most specific first: at a given position the first branch that matches
# wins, so "release-1.2.3.tar.gz" is one file name, not a file name plus a version.
_EXACT_TERM = re.compile(
    rf"""(?<![\w/.-])(?:
        (?:[\w.-]+/)*[\w.-]*[\w-]\.(?:{_FILE_EXTENSIONS})          # file name or path
      | \d{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])        # ISO date
      | \d{{4}}/(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])      # 2024/01/05
      | (?:0?[1-9]|[12]\d|3[01])/(?:0?[1-9]|[12]\d|3[01])/(?:\d{{4}}|\d{{2}})  # 05/01/2024
      | (?:0?[1-9]|[12]\d|3[01])[.-](?:0?[1-9]|1[0-2])[.-]\d{{4}}  # 05.01.2024, 05-01-2024
      | [vV]\d+(?:\.\d+)*(?:[-+][0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?  # v2, v1.2.3, v1.2.3-rc1
      | \d+\.\d+\.\d+(?:\.\d+)*(?:[-+][0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?  # 1.13.27
      | (?=[\w-]*\d)[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+    # AIP-4031, gpt-4o-mini
      | (?=[0-9a-fA-F]*\d)[0-9a-fA-F]{{7,128}}                      # SHA-like hex, long number
      | _*[A-Za-z][A-Za-z0-9]*(?:_+[A-Za-z0-9]+)+_*              # snake_case
      | [A-Za-z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+                  # camelCase, PascalCase
    )(?![\w/-]|\.\w)""",
    re.VERBOSE,
)

# Around a term in a passage: no letter or digit, and no "." or "-" joining one on, so
# "AIP-403" is not in "AIP-4031" and "v1.2" not in "v1.25" or "v1.2.3", yet "(AIP-403)." is.
_TERM_START = r"(?<!\w)(?<!\w[.-])"
_TERM_END = r"(?!\w)(?![.-]\w)"

# Han and kana are written without spaces; a run of them counts one word per two characters,
# about the average word length, so a long Chinese or Japanese question is not "one word".
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD = re.compile(rf"[{_UNSPACED}]+|[^\s{_UNSPACED}]*[^\W{_UNSPACED}][^\s{_UNSPACED}]*")
_UNSPACED_RUN = re.compile(rf"[{_UNSPACED}]+")

_SCRIPT_RANGES: tuple[tuple[int, int, Script], ...] = (
    (0x0041, 0x024F, Script.LATIN),
    (0x0370, 0x03FF, Script.GREEK),
    (0x0400, 0x052F, Script.CYRILLIC),
    (0x0590, 0x05FF, Script.HEBREW),
    (0x0600, 0x08FF, Script.ARABIC),
    (0x1100, 0x11FF, Script.CJK),
    (0x1E00, 0x1EFF, Script.LATIN),
    (0x1F00, 0x1FFF, Script.GREEK),
    (0x3040, 0x30FF, Script.CJK),
    (0x3130, 0x318F, Script.CJK),
    (0x3400, 0x4DBF, Script.CJK),
    (0x4E00, 0x9FFF, Script.CJK),
    (0xAC00, 0xD7AF, Script.CJK),
    (0xF900, 0xFAFF, Script.CJK),
    (0xFB50, 0xFEFF, Script.ARABIC),
    (0x20000, 0x2FA1F, Script.CJK),
)
DOMINANT_SCRIPT_SHARE = 0.6
"""A script must write this share of the letters to name the query; otherwise it is mixed."""


def prepare_query(raw: str, max_chars: int = DEFAULT_MAX_CHARS) -> PreparedQuery:
    """Normalise ``raw`` and extract routing features; raises QueryError if nothing is left."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    text = normalise_text(raw)
    if not text:
        raise QueryError("The query is empty: type a question or some keywords to search for")
    truncated = len(text) > max_chars
    if truncated:
        text = _truncate(text, max_chars)
    return PreparedQuery(
        text=text,
        truncated=truncated,
        exact_terms=_unique(match.group() for match in _EXACT_TERM.finditer(text)),
        quoted_phrases=_quoted_phrases(text),
        word_count=word_count(text),
        script=detect_script(text),
    )


def names_term(text: str, term: str) -> bool:
    """True when ``text`` names ``term`` as a whole term (any case), not as part of a longer one."""
    return re.search(_TERM_START + re.escape(term) + _TERM_END, text, re.IGNORECASE) is not None


def normalise_text(raw: str) -> str:
    """NFKC, control and format characters removed, whitespace collapsed to single spaces."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", raw))
    kept = "".join(
        char
        for char in text
        if char in _KEPT_FORMAT_CHARS or unicodedata.category(char) not in _DROPPED_CATEGORIES
    )
    return _WHITESPACE.sub(" ", kept).strip()


def word_count(text: str) -> int:
    """Words in ``text``, with unspaced Han/kana runs counted as one word per two characters."""
    count = 0
    for word in _WORD.findall(text):
        count += math.ceil(len(word) / 2) if _UNSPACED_RUN.fullmatch(word) else 1
    return count


def detect_script(text: str) -> Script:
    """The script of at least DOMINANT_SCRIPT_SHARE of the letters, else MIXED."""
    counts: dict[Script, int] = {}
    for char in text:
        if char.isalpha():
            script = _script_of(ord(char))
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return Script.OTHER
    script, letters = max(counts.items(), key=lambda item: item[1])
    return script if letters >= DOMINANT_SCRIPT_SHARE * sum(counts.values()) else Script.MIXED


def _script_of(code_point: int) -> Script:
    for start, end, script in _SCRIPT_RANGES:
        if start <= code_point <= end:
            return script
    return Script.OTHER


def _truncate(text: str, max_chars: int) -> str:
    """Cut at the last space within ``max_chars``; hard-cut a single overlong word."""
    head = text[: max_chars + 1]
    boundary = head.rfind(" ")
    return (head[:boundary] if boundary > 0 else text[:max_chars]).rstrip()


def _quoted_phrases(text: str) -> list[str]:
    phrases = (
        next(group for group in match.groups() if group is not None).strip()
        for match in _QUOTED.finditer(text)
    )
    return _unique(phrase for phrase in phrases if phrase)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
