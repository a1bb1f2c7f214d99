"""Document loading: extraction, stable ids, and bad files reported instead of crashing."""

import codecs
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiplatform_dagster.rag.ingest.documents import extract_html, load_documents
from aiplatform_dagster_tests.conftest import SMALL_CORPUS, write_corpus


def test_loads_every_format_with_ids_titles_and_hashes(corpus_dir: Path) -> None:
    docs, skipped = load_documents(corpus_dir)
    assert skipped == []
    by_id = {doc.doc_id: doc for doc in docs}
    assert sorted(by_id) == sorted(SMALL_CORPUS)
    assert by_id["runbooks/paging.md"].title == "Paging policy"
    assert by_id["guides/embeddings.txt"].title == "Embedding models"
    html = by_id["guides/bm25.html"]
    assert html.title == "Keyword search"
    assert "AIP-4031" in html.text
    assert "alert(" not in html.text and "color: red" not in html.text
    assert all(len(doc.content_hash) == 64 for doc in docs)
    assert by_id["runbooks/paging.md"].source_path == str(corpus_dir / "runbooks/paging.md")


def test_ids_and_hashes_are_stable_across_loads(corpus_dir: Path) -> None:
    first, _ = load_documents(corpus_dir)
    second, _ = load_documents(corpus_dir)
    assert [(d.doc_id, d.content_hash) for d in first] == [
        (d.doc_id, d.content_hash) for d in second
    ]


def test_html_paragraphs_survive_as_blank_line_breaks() -> None:
    title, text = extract_html(
        "<html><body><h1>Heading</h1><p>One   two.</p><ul><li>three</li></ul></body></html>"
    )
    assert title == "Heading"
    assert text == "Heading\n\nOne two.\n\nthree"


def test_each_kind_of_bad_file_is_reported_and_skipped(tmp_path: Path) -> None:
    folder = write_corpus(
        tmp_path,
        {
            "good.md": "# Good\n\nA perfectly fine document.",
            "binary.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00binary",
            "latin1.txt": "caf\u00e9 cr\u00e8me".encode("latin-1"),
            "empty.md": "   \n\n  ",
            "empty.html": "<html><head><title>Only a title</title></head><body></body></html>",
            "huge.txt": "word " * 400,
            "image.png": b"\x89PNG",
            ".hidden.md": "never read",
        },
    )
    os.symlink(tmp_path / "missing-target.md", folder / "broken-link.md")

    docs, skipped = load_documents(folder, max_file_bytes=1000)

    assert [doc.doc_id for doc in docs] == ["good.md"]
    reasons = {problem.path: problem.reason for problem in skipped}
    assert set(reasons) == {
        "binary.txt",
        "latin1.txt",
        "empty.md",
        "empty.html",
        "huge.txt",
        "image.png",
        "broken-link.md",
    }
    assert "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"] and "empty" in reasons["empty.html"]
    assert "limit" in reasons["huge.txt"]
    assert "unsupported" in reasons["image.png"]
    assert "unreadable" in reasons["broken-link.md"]


def test_missing_folder_says_how_to_fix(tmp_path: Path) -> None:
    try:
        load_documents(tmp_path / "nowhere")
    except FileNotFoundError as error:
        assert "AIPLATFORM_DOCUMENTS_DIR" in str(error)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_links_out_of_the_documents_folder_are_skipped_and_reported(tmp_path: Path) -> None:
    outside = write_corpus(
        tmp_path / "outside",
        {"secret.md": "# Secret\n\nHost db-prod-7.", "shared/notes.md": "# Notes\n\nShared."},
    )
    folder = write_corpus(
        tmp_path / "docs", {"guide.md": "# Guide\n\nRead me.", "sub/real.md": "# Real\n\nHere."}
    )
    (folder / "alias.md").symlink_to(folder / "guide.md")
    (folder / "sub" / "up.md").symlink_to("../guide.md")
    (folder / "hostname.md").symlink_to(outside / "secret.md")
    (folder / "sub" / "escape.md").symlink_to("../../outside/secret.md")
    (folder / "shared").symlink_to(outside / "shared", target_is_directory=True)

    docs, skipped = load_documents(folder)

    assert [d.doc_id for d in docs] == ["alias.md", "guide.md", "sub/real.md", "sub/up.md"]
    assert all("db-prod-7" not in doc.text for doc in docs)
    reasons = {problem.path: problem.reason for problem in skipped}
    assert set(reasons) == {"hostname.md", "sub/escape.md", "shared"}
    for reason in reasons.values():
        assert "outside the documents folder" in reason and "follow_external_symlinks" in reason
    assert str(outside / "secret.md") in reasons["hostname.md"]
    assert str(outside / "shared") in reasons["shared"]


def test_links_out_are_followed_when_configured(tmp_path: Path) -> None:
    outside = write_corpus(tmp_path / "outside", {"shared/notes.md": "# Notes\n\nShared."})
    folder = write_corpus(tmp_path / "docs", {"guide.md": "# Guide\n\nRead me."})
    (folder / "shared").symlink_to(outside / "shared", target_is_directory=True)
    (outside / "shared" / "loop").symlink_to(outside / "shared", target_is_directory=True)

    docs, skipped = load_documents(folder, follow_external_symlinks=True)

    assert [d.doc_id for d in docs] == ["guide.md", "shared/notes.md"]
    assert [(s.path, "already read" in s.reason) for s in skipped] == [("shared/loop", True)]


def test_a_link_to_a_folder_inside_is_read_once_at_its_own_path(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path, {"v2/guide.md": "# Guide\n\nVersion two."})
    (folder / "latest").symlink_to(folder / "v2", target_is_directory=True)

    docs, skipped = load_documents(folder)

    assert [d.doc_id for d in docs] == ["v2/guide.md"]
    assert [(s.path, "already read" in s.reason) for s in skipped] == [("latest", True)]


def test_a_pipe_is_reported_not_read(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path, {"good.md": "# Good\n\nFine."})
    os.mkfifo(folder / "pipe.md")
    docs, skipped = load_documents(folder)
    assert [d.doc_id for d in docs] == ["good.md"]
    assert [(s.path, "not a regular file" in s.reason) for s in skipped] == [("pipe.md", True)]


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("utf16le.md", lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le")),
        ("utf16be.md", lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be")),
        ("utf32.md", lambda text: text.encode("utf-32")),
        ("utf8bom.md", lambda text: codecs.BOM_UTF8 + text.encode("utf-8")),
    ],
)
def test_text_with_a_byte_order_mark_is_decoded(tmp_path: Path, name, encode) -> None:
    text = "# Café guide\n\nThe crème brûlée is served at noon."
    folder = write_corpus(tmp_path, {name: encode(text)})

    docs, skipped = load_documents(folder)

    assert skipped == []
    assert (docs[0].title, docs[0].text) == ("Café guide", text)


def test_broken_utf16_says_which_encoding_failed(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path, {"odd.md": codecs.BOM_UTF16_LE + b"a\x00b"})
    _, skipped = load_documents(folder)
    assert [s.path for s in skipped] == ["odd.md"]
    assert "UTF-16" in skipped[0].reason


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2

LOAD_AND_PRINT = (
    "import json, sys\n"
    "from aiplatform_dagster.rag.ingest.documents import load_documents\n"
    "docs, skipped = load_documents(sys.argv[1])\n"
    "print(json.dumps({'docs': [d.doc_id for d in docs],"
    " 'skipped': {s.path: s.reason for s in skipped}}))\n"
)


def drop_root_override() -> None:
    """Before exec in the child: give up root's right to read any folder (Linux capabilities),
    so a chmod-000 folder is as unreadable to the test as to an ordinary user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def load_without_privileges(folder: Path) -> dict:
    """Run the real loader in a process that file permissions bind, root or not."""
    as_root = os.geteuid() == 0
    try:
        result = subprocess.run(
            [sys.executable, "-c", LOAD_AND_PRINT, str(folder)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[3],
            preexec_fn=drop_root_override if as_root else None,
        )
    except subprocess.SubprocessError as error:
        if as_root and not isinstance(error, subprocess.CalledProcessError):
            pytest.skip(f"root here may not drop its read-anything capability: {error}")
        raise
    return json.loads(result.stdout)


def test_an_unreadable_subfolder_is_reported(tmp_path: Path) -> None:
    folder = write_corpus(
        tmp_path, {"good.md": "# Good\n\nFine.", "locked/secret.md": "# Secret\n\nHidden."}
    )
    (folder / "locked").chmod(0)
    try:
        loaded = load_without_privileges(folder)
    finally:
        (folder / "locked").chmod(0o755)

    assert loaded["docs"] == ["good.md"]
    assert list(loaded["skipped"]) == ["locked"]
    reason = loaded["skipped"]["locked"]
    assert "folder" in reason and "Permission denied" in reason and "permission" in reason
