"""Read a folder of documents into clean text records, skipping (and reporting) bad files.

A broken file must never fail an ingestion run or push good documents out of the
index, so every problem becomes a ``SkippedFile`` with a reason a person can act on.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".html", ".htm"})
DEFAULT_MAX_FILE_BYTES = 5_000_000
_BINARY_SNIFF_BYTES = 8192
_MAX_TITLE_CHARS = 120


@dataclass(frozen=True, slots=True)
class Document:
    """One source document, with the provenance a citation needs."""

    doc_id: str
    title: str
    source_path: str
    content_hash: str
    modified_at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that was not ingested, and why."""

    path: str
    reason: str


class DocumentError(ValueError):
    """A file that cannot become a document; the message says what to fix."""


def iter_candidate_files(folder: Path) -> Iterator[Path]:
    """Every non-hidden file (or link to one, even a broken link) under ``folder``, sorted."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() or path.is_symlink():
            yield path


def doc_id_for(folder: Path, path: Path) -> str:
    """Stable id: the POSIX path relative to the corpus root, so moves are visible."""
    return path.relative_to(folder).as_posix()


def load_documents(
    folder: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[list[Document], list[SkippedFile]]:
    """Load every supported file under ``folder``; return documents and skipped files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Document folder {folder} does not exist or is not a directory: "
            "set AIPLATFORM_DOCUMENTS_DIR (or the documents resource's folder) to a folder."
        )
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    for path in iter_candidate_files(folder):
        doc_id = doc_id_for(folder, path)
        try:
            documents.append(read_document(folder, path, max_file_bytes))
        except DocumentError as error:
            skipped.append(SkippedFile(doc_id, str(error)))
    return documents, skipped


def read_document(folder: Path, path: Path, max_file_bytes: int) -> Document:
    """Read and extract one file, raising ``DocumentError`` with the reason it is unusable."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(
            f"unsupported file type {suffix or '(none)'}; "
            f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    try:
        stat = path.stat()
        if stat.st_size > max_file_bytes:
            raise DocumentError(
                f"file is {stat.st_size:,} bytes, over the {max_file_bytes:,}-byte limit; "
                "split it or raise max_file_bytes"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise DocumentError(f"unreadable: {error.strerror or error}") from error
    if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise DocumentError("binary content (NUL bytes); only text formats are ingested")
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"not valid UTF-8 (byte {error.start}); re-save the file as UTF-8"
        ) from error
    if suffix in {".html", ".htm"}:
        html_title, text = extract_html(decoded)
    else:
        html_title, text = None, normalise_whitespace(decoded)
    if not text.strip():
        raise DocumentError("empty: no text after extraction")
    return Document(
        doc_id=doc_id_for(folder, path),
        title=html_title or title_from_text(text, path),
        source_path=str(path),
        content_hash=hashlib.sha256(raw).hexdigest(),
        modified_at=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        text=text,
    )


def normalise_whitespace(text: str) -> str:
    """Unify line endings, trim trailing spaces and collapse runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def title_from_text(text: str, path: Path) -> str:
    """A Markdown heading or short first line if there is one, else the file name."""
    first_line = text.lstrip().split("\n", 1)[0].strip()
    heading = first_line.lstrip("#").strip()
    if heading and len(heading) <= _MAX_TITLE_CHARS:
        return heading
    return path.stem.replace("_", " ").replace("-", " ").strip().capitalize()


_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "td",
        "th",
        "ul",
    }
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _TextExtractor(HTMLParser):
    """Collects visible text, breaking paragraphs at block elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.heading_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag == "h1":
            self._in_h1 = True
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "h1":
            self._in_h1 = False
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif self._skip_depth == 0:
            self.parts.append(data)
            if self._in_h1:
                self.heading_parts.append(data)


def extract_html(html: str) -> tuple[str | None, str]:
    """Visible text of an HTML page and its title (<title>, else the first <h1>)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    paragraphs = (
        " ".join(block.split()) for block in re.split(r"\n\s*\n", "".join(extractor.parts))
    )
    text = "\n\n".join(p for p in paragraphs if p)
    title = " ".join("".join(extractor.title_parts or extractor.heading_parts).split())
    return (title or None), text
