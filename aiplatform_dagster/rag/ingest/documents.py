"""Read a folder of documents into clean text records, skipping (and reporting) bad files.

A broken file must never fail an ingestion run or push good documents out of the
index, so every problem becomes a ``SkippedFile`` with a reason a person can act on.
"""

import codecs
import hashlib
import os
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
_BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


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


@dataclass(frozen=True, slots=True)
class FolderScan:
    """The files to read under a documents folder, and the entries passed over (and why)."""

    files: list[Path]
    skipped: list[SkippedFile]


def scan_folder(folder: Path, follow_external_symlinks: bool = False) -> FolderScan:
    """Every non-hidden file (or link to one, even a broken link) under ``folder``, sorted.

    Links never lead out of the folder unless ``follow_external_symlinks`` (a link to
    /etc would otherwise put system files in search results); a folder is read once, at
    its own path; unreadable folders and links not followed are reported, never silent.
    """
    walker = _FolderWalker(Path(folder), follow_external_symlinks)
    walker.walk(walker.folder)
    return FolderScan(walker.files, walker.skipped)


class _FolderWalker:
    """Depth-first walk in name order, collecting files to read and entries passed over."""

    def __init__(self, folder: Path, follow_external_symlinks: bool) -> None:
        self.folder = folder
        self.root = folder.resolve()
        self.follow_external_symlinks = follow_external_symlinks
        self.visited = {self.root}
        self.files: list[Path] = []
        self.skipped: list[SkippedFile] = []

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append(SkippedFile(doc_id_for(self.folder, path), reason))

    def walk(self, directory: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            self.skip(
                directory,
                f"unreadable folder ({error.strerror or error}), so none of its files are "
                "indexed; give the ingestion's user read and execute permission on it",
            )
            return
        for entry in entries:
            if not entry.name.startswith("."):
                self.visit(Path(entry.path), entry.is_symlink())

    def visit(self, path: Path, is_link: bool) -> None:
        target = Path(os.path.realpath(path))
        inside = target.is_relative_to(self.root)
        if is_link and not (inside or self.follow_external_symlinks):
            self.skip(
                path,
                f"symbolic link to {target}, outside the documents folder {self.root}: "
                "not followed (set follow_external_symlinks to read it)",
            )
        elif target.is_file() or not target.exists():  # a broken link is reported on read
            self.files.append(path)
        elif not target.is_dir():
            self.skip(path, "not a regular file (a pipe, socket or device)")
        elif not is_link:
            self.walk(path)
        elif inside or target in self.visited:
            self.skip(path, f"link to the folder {target}, already read at its own path")
        else:
            self.visited.add(target)
            self.walk(path)


def iter_candidate_files(folder: Path, follow_external_symlinks: bool = False) -> Iterator[Path]:
    """The files ``scan_folder`` would read, for callers that only fingerprint them."""
    yield from scan_folder(folder, follow_external_symlinks).files


def doc_id_for(folder: Path, path: Path) -> str:
    """Stable id: the POSIX path relative to the corpus root, so moves are visible."""
    return path.relative_to(folder).as_posix()


def load_documents(
    folder: Path,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    *,
    follow_external_symlinks: bool = False,
) -> tuple[list[Document], list[SkippedFile]]:
    """Load every supported file under ``folder``; return documents and skipped entries."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Document folder {folder} does not exist or is not a directory: "
            "set AIPLATFORM_DOCUMENTS_DIR (or the documents resource's folder) to a folder."
        )
    scan = scan_folder(folder, follow_external_symlinks)
    documents: list[Document] = []
    skipped = list(scan.skipped)
    for path in scan.files:
        try:
            documents.append(read_document(folder, path, max_file_bytes))
        except DocumentError as error:
            skipped.append(SkippedFile(doc_id_for(folder, path), str(error)))
    return documents, sorted(skipped, key=lambda problem: problem.path)


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
    decoded = decode_text(raw)
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


def decode_text(raw: bytes) -> str:
    """Text in the encoding its byte-order mark names (UTF-8, -16 or -32), else UTF-8.

    Editors on Windows save UTF-16 with a mark; its NUL bytes must not read as binary.
    """
    encoding = next((name for mark, name in _BYTE_ORDER_MARKS if raw.startswith(mark)), None)
    if encoding is None and b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise DocumentError("binary content (NUL bytes); only text formats are ingested")
    encoding = encoding or "UTF-8"
    try:
        return raw.decode("utf-8-sig" if encoding == "UTF-8" else encoding)
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"not valid {encoding} (byte {error.start}); re-save the file as UTF-8"
        ) from error


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
