"""Document loading: extraction, stable ids, and bad files reported instead of crashing."""

import os
from pathlib import Path

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
