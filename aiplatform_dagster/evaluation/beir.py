"""Read and write BEIR-format datasets, so public benchmarks and our own golden sets share a loader.

A BEIR folder holds corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id", "text"}) and
qrels/{split}.tsv (header "query-id<TAB>corpus-id<TAB>score"). Files are read line by line
because a corpus can be millions of documents.

A dataset that cannot give a meaningful score (an empty corpus, no judged query, qrels from
another corpus) is refused with a ``BeirDatasetError``; judged documents missing from the
corpus, which lower every score, are reported in ``BeirDataset.warnings``.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiplatform_dagster.errors import PlatformError

QRELS_HEADER = ("query-id", "corpus-id", "score")
EXAMPLES = 5


class BeirDatasetError(PlatformError, ValueError):
    """A BEIR folder that cannot be scored; the message names the file and what to fix."""


@dataclass(frozen=True, slots=True)
class BeirDoc:
    """One corpus document; the title is kept apart because BEIR retrievers often weight it."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """A corpus, the queries judged in one split, and their graded judgements (0 = not relevant).

    ``warnings`` says what makes the scores lower than the dataset allows (judged documents the
    corpus lacks); callers print or log them beside the scores.
    """

    corpus: dict[str, BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    warnings: tuple[str, ...] = ()


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) for non-blank lines, naming the file if it is missing."""
    if not path.is_file():
        raise BeirDatasetError(
            f"BEIR file not found: {path}. A BEIR dataset folder holds corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
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
            raise BeirDatasetError(
                f"{path}:{number}: expected a JSON object with '_id' and 'text' ({error!r})"
            ) from error
        yield doc


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    rows = _lines(path)
    number, header = next(rows, (1, ""))
    if tuple(cell.strip() for cell in header.split("\t")) != QRELS_HEADER:
        expected = "<TAB>".join(QRELS_HEADER)
        raise BeirDatasetError(f"{path}:{number}: expected header {expected!r}, got {header!r}")
    for number, line in rows:
        try:
            query_id, doc_id, score = line.split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
        except ValueError as error:
            raise BeirDatasetError(
                f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>integer score', "
                f"got {line!r}"
            ) from error
    return qrels


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder, keeping only the queries judged in `split` (as BEIR's loader does)."""
    folder = Path(folder)
    queries, qrels = load_judged_queries(folder, split)
    corpus_file = folder / "corpus.jsonl"
    corpus = {doc.doc_id: doc for doc in _json_records(corpus_file)}
    if not corpus:
        raise BeirDatasetError(
            f"{corpus_file} holds no documents: a BEIR corpus has one JSON object per line "
            "with '_id', 'title' and 'text'"
        )
    warnings = _missing_judged_documents(corpus, qrels, f"qrels/{split}.tsv")
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, warnings=warnings)


def _missing_judged_documents(
    corpus: Mapping[str, BeirDoc], qrels: Mapping[str, Mapping[str, int]], qrels_name: str
) -> tuple[str, ...]:
    """A warning when some judged documents are not in the corpus; an error when none are.

    Scoring goes on as BEIR does (a missing relevant document is never found), but the user
    must know that the scores are capped below 1 and why.
    """
    judged = {doc_id for grades in qrels.values() for doc_id in grades}
    missing = sorted(judged - corpus.keys())
    if not missing:
        return ()
    examples = ", ".join(repr(doc_id) for doc_id in missing[:EXAMPLES])
    if len(missing) == len(judged):
        raise BeirDatasetError(
            f"corpus.jsonl holds none of the {len(judged)} documents judged in {qrels_name} "
            f"(e.g. {examples}): the qrels belong to another corpus, or the ids differ; check "
            "the corpus '_id' fields against the qrels corpus-id column"
        )
    unscorable = [
        query_id
        for query_id, grades in qrels.items()
        if not any(grade > 0 and doc_id in corpus for doc_id, grade in grades.items())
    ]
    return (
        f"{len(missing)} of {len(judged)} judged documents in {qrels_name} are not in "
        f"corpus.jsonl (e.g. {examples}); {len(unscorable)} of {len(qrels)} judged queries have "
        "no relevant document left in the corpus and score 0. Scores are lower than the "
        "dataset allows: use the corpus the qrels were made for",
    )


def load_judged_queries(
    folder: Path, split: str = "test"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries judged in `split` and their judgements, without reading the corpus.

    Golden sets over a live corpus (the platform's own documents) ship only these files.
    """
    folder = Path(folder)
    qrels_file = folder / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_file)
    if not qrels:
        raise BeirDatasetError(
            f"{qrels_file} judges no query: after its header it needs one "
            "'query-id<TAB>corpus-id<TAB>score' line per judgement"
        )
    queries = {
        query.doc_id: query.text
        for query in _json_records(folder / "queries.jsonl")
        if query.doc_id in qrels
    }
    missing = [query_id for query_id in qrels if query_id not in queries]
    if missing:
        raise BeirDatasetError(
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
