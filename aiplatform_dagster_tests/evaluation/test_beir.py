"""load_beir must read back what write_beir wrote and point at the broken file or line."""

from pathlib import Path

import pytest

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.evaluation.beir import (
    BeirDatasetError,
    BeirDoc,
    load_beir,
    load_judged_queries,
    write_beir,
)

CORPUS = [
    BeirDoc("d1", "Hybrid search", "BM25 plus dense vectors."),
    BeirDoc("d2", "", "Untitled doc with unicode: naïve café, 東京."),
    BeirDoc("d3", "Reranking", "A cross-encoder reorders the top hits."),
]
QUERIES = {"q1": "what is hybrid search", "q2": "how does reranking work", "q3": "unjudged"}
QRELS = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    write_beir(tmp_path, CORPUS, QUERIES, QRELS, split="test")
    return tmp_path


def test_round_trip_keeps_docs_judged_queries_and_zero_grades(dataset_dir: Path) -> None:
    dataset = load_beir(dataset_dir, split="test")

    assert dataset.corpus == {doc.doc_id: doc for doc in CORPUS}
    assert dataset.queries == {"q1": QUERIES["q1"], "q2": QUERIES["q2"]}  # q3 is not judged
    assert dataset.qrels == QRELS
    assert all(
        isinstance(grade, int) for grades in dataset.qrels.values() for grade in grades.values()
    )
    assert dataset.warnings == ()


def test_split_selects_the_qrels_file(dataset_dir: Path) -> None:
    write_beir(dataset_dir, CORPUS, QUERIES, {"q3": {"d2": 1}}, split="dev")

    dataset = load_beir(dataset_dir, split="dev")

    assert dataset.queries == {"q3": "unjudged"}
    assert dataset.qrels == {"q3": {"d2": 1}}


def test_missing_qrels_file_is_named(dataset_dir: Path) -> None:
    with pytest.raises(PlatformError, match=r"qrels/train\.tsv"):
        load_beir(dataset_dir, split="train")


def test_missing_corpus_is_named(dataset_dir: Path) -> None:
    (dataset_dir / "corpus.jsonl").unlink()
    with pytest.raises(PlatformError, match=r"corpus\.jsonl"):
        load_beir(dataset_dir)


def test_an_empty_corpus_is_an_error_not_a_score_of_zero(tmp_path: Path) -> None:
    write_beir(tmp_path, [], QUERIES, QRELS)
    with pytest.raises(BeirDatasetError, match=r"corpus\.jsonl.*no documents"):
        load_beir(tmp_path)


def test_a_split_that_judges_no_query_is_an_error(tmp_path: Path) -> None:
    write_beir(tmp_path, CORPUS, QUERIES, {}, split="dev")
    with pytest.raises(BeirDatasetError, match=r"qrels/dev\.tsv.*no query"):
        load_beir(tmp_path, split="dev")
    with pytest.raises(BeirDatasetError, match=r"qrels/dev\.tsv.*no query"):
        load_judged_queries(tmp_path, split="dev")


def test_judged_documents_missing_from_the_corpus_are_counted_in_a_warning(
    tmp_path: Path,
) -> None:
    qrels = {"q1": {"d1": 2, "gone-1": 1}, "q2": {"gone-2": 1, "gone-3": 0}}
    write_beir(tmp_path, CORPUS, QUERIES, qrels)

    dataset = load_beir(tmp_path)

    [warning] = dataset.warnings
    assert "3 of 4 judged documents" in warning and "qrels/test.tsv" in warning
    assert "'gone-1'" in warning and "'gone-2'" in warning
    assert "1 of 2 judged queries" in warning  # q2 has no relevant document left: it scores 0
    assert dataset.qrels == qrels  # scored as judged, as BEIR does: the warning says why it is low


def test_a_corpus_holding_none_of_the_judged_documents_is_an_error(tmp_path: Path) -> None:
    write_beir(tmp_path, CORPUS, QUERIES, {"q1": {"x1": 1}, "q2": {"x2": 1}})
    with pytest.raises(BeirDatasetError, match=r"none of the 2 documents judged in qrels/test"):
        load_beir(tmp_path)


def test_malformed_qrels_line_reports_its_number(dataset_dir: Path) -> None:
    qrels_file = dataset_dir / "qrels" / "test.tsv"
    lines = qrels_file.read_text(encoding="utf-8").splitlines()
    lines[2] = "q1\td2\tnot-a-number"  # line 3: header, q1/d1, then this
    qrels_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"test\.tsv:3:.*not-a-number"):
        load_beir(dataset_dir)


def test_qrels_without_header_is_rejected(dataset_dir: Path) -> None:
    (dataset_dir / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.tsv:1: expected header"):
        load_beir(dataset_dir)


def test_malformed_corpus_line_reports_its_number(dataset_dir: Path) -> None:
    corpus_file = dataset_dir / "corpus.jsonl"
    with corpus_file.open("a", encoding="utf-8") as handle:
        handle.write('{"_id": "d4", "title": "no text field"}\n')

    with pytest.raises(ValueError, match=r"corpus\.jsonl:4:"):
        load_beir(dataset_dir)


def test_judged_query_missing_from_queries_is_an_error(tmp_path: Path) -> None:
    write_beir(tmp_path, CORPUS, {"q1": "only q1"}, QRELS)
    with pytest.raises(ValueError, match=r"not in queries\.jsonl.*q2"):
        load_beir(tmp_path)
