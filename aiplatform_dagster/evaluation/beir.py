"""Read and write BEIR-format datasets, so public benchmarks and our own golden sets share a loader.

A BEIR folder holds corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id", "text"}) and
qrels/{split}.tsv (header "query-id<TAB>corpus-id<TAB>score"). Files are read line by line
because a corpus can be millions of documents.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True, slots=True)
class BeirDoc:
    """One corpus document; the title is kept apart because BEIR retrievers often weight it."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """A corpus, the queries judged in one split, and their graded judgements (0 = not relevant)."""

    corpus: dict[str, BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) for non-blank lines, naming the file if it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"BEIR file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip("\r\n")


def _json_records(path: Path) -> Iterator[BeirDoc]:
    """Parse each line as a BEIR record; queries reuse BeirDoc with an empty title."""
    for number, line in _lines(path):
        try:
            record = json.loads(line)
            doc = BeirDoc(str(record["_id"]), str(record.get("title") or ""), str(record["text"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{path}:{number}: expected a JSON object with '_id' and 'text' ({error!r})"
            ) from error
        yield doc


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    rows = _lines(path)
    number, header = next(rows, (1, ""))
    if tuple(cell.strip() for cell in header.split("\t")) != QRELS_HEADER:
        expected = "<TAB>".join(QRELS_HEADER)
        raise ValueError(f"{path}:{number}: expected header {expected!r}, got {header!r}")
    for number, line in rows:
        try:
            query_id, doc_id, score = line.split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
        except ValueError as error:
            raise ValueError(
                f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>integer score', "
                f"got {line!r}"
            ) from error
    return qrels


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder, keeping only the queries judged in `split` (as BEIR's loader does)."""
    folder = Path(folder)
    queries, qrels = load_judged_queries(folder, split)
    corpus = {doc.doc_id: doc for doc in _json_records(folder / "corpus.jsonl")}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def load_judged_queries(
    folder: Path, split: str = "test"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries judged in `split` and their judgements, without reading the corpus.

    Golden sets over a live corpus (the platform's own documents) ship only these files.
    """
    folder = Path(folder)
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = {
        query.doc_id: query.text
        for query in _json_records(folder / "queries.jsonl")
        if query.doc_id in qrels
    }
    missing = [query_id for query_id in qrels if query_id not in queries]
    if missing:
        raise ValueError(
            f"{len(missing)} query ids in qrels/{split}.tsv are not in queries.jsonl, "
            f"e.g. {missing[:5]}"
        )
    return queries, qrels


def write_beir(
    folder: Path,
    corpus: Iterable[BeirDoc],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    split: str = "test",
) -> None:
    """Write a dataset that load_beir (and BEIR itself) can read, e.g. a small test set."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc in corpus:
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, grades in qrels.items():
            for doc_id, grade in grades.items():
                handle.write(f"{query_id}\t{doc_id}\t{int(grade)}\n")
