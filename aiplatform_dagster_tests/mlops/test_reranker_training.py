"""Training the cross-encoder reranker for real on tiny data: it must learn what the untrained
model gets wrong, never train a judged relevant document down, carry its interpolation weight
in the model folder, and be measured against hybrid on exactly the dev split's queries."""

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from aiplatform_dagster.evaluation.beir import BeirDoc, write_beir
from aiplatform_dagster.evaluation.runner import open_benchmark
from aiplatform_dagster.mlops.reranker_training import (
    CandidateList,
    RerankerBudget,
    RerankerRecipe,
    candidate_lists,
    compare_with_hybrid,
    split_queries,
    teacher_targets,
    train_reranker,
)
from aiplatform_dagster.models.embedders import Embedder, packaged_minilm_path
from aiplatform_dagster.rag.index.releases import Release
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.rerank import (
    INTERPOLATION_FILE,
    CrossEncoderReranker,
    Interpolation,
    RerankerError,
)
from aiplatform_dagster.rag.query.retriever import RetrievedChunk, Retriever, SearchMode
from aiplatform_dagster_tests.cross_encoder import TRIPLES

TRAIN = TRIPLES[:16]
BUDGET = RerankerBudget(epochs=6, batch_queries=4, group_size=4, learning_rate=1e-4, max_length=64)
HAND_MADE = RerankerRecipe(interpolate=False)


def _chunk(doc_id: str, text: str) -> Chunk:
    return Chunk(doc_id, doc_id, "", f"{doc_id}.txt", 0, 0, len(text), len(text.split()), text)


def hand_made_list(index: int, query: str, relevant: str) -> CandidateList:
    """The relevant passage ranked last by the first stage, below seven unrelated ones."""
    others = [t[2] for t in TRIPLES if t[2] != relevant][index : index + 7]
    others += [t[2] for t in TRIPLES[: 7 - len(others)]]
    texts = [*others, relevant]
    candidates = tuple(
        RetrievedChunk(_chunk(f"q{index}-d{rank}", text), 1.0 - rank / 10)
        for rank, text in enumerate(texts)
    )
    return CandidateList(f"q{index}", query, candidates, frozenset({f"q{index}-d7"}))


def relevant_first(model: str, lists: Sequence[CandidateList]) -> int:
    reranker = CrossEncoderReranker(model)
    return sum(
        reranker.rerank(entry.query, entry.candidates, 1)[0].chunk.doc_id in entry.relevant
        for entry in lists
    )


@pytest.fixture(scope="module")
def lists() -> list[CandidateList]:
    return [hand_made_list(i, query, relevant) for i, (query, relevant, _) in enumerate(TRAIN)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, lists: list[CandidateList]) -> Path:
    folder = tmp_path_factory.mktemp("reranker")
    stats = train_reranker(lists, folder, BUDGET, HAND_MADE)
    assert stats.steps == 6 * math.ceil(len(lists) / 4) and stats.pairs == stats.steps * 16
    assert stats.pairs_per_second > 0 and stats.device == "cpu" and stats.first_stage_weight == 0
    return folder


def test_training_teaches_what_the_untrained_model_gets_wrong(
    trained: Path, lists: list[CandidateList], tmp_path: Path
) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(BUDGET.seed)
    CrossEncoder(packaged_minilm_path(), num_labels=1).save_pretrained(str(tmp_path))

    assert relevant_first(str(tmp_path), lists) <= len(lists) // 2
    assert relevant_first(str(trained), lists) == len(lists)


def test_the_same_seed_trains_the_same_model(lists: list[CandidateList], tmp_path: Path) -> None:
    budget = RerankerBudget(max_steps=2, batch_queries=2, group_size=3, max_length=64)
    steps: list[tuple[int, int]] = []
    for name in ("a", "b"):
        train_reranker(
            lists, tmp_path / name, budget, HAND_MADE, progress=lambda *s: steps.append(s)
        )
    pairs = [(entry.query, entry.candidates[0].chunk.text) for entry in lists]
    first, second = (CrossEncoderReranker(str(tmp_path / n)).model.predict(pairs) for n in "ab")

    assert first.tolist() == second.tolist()
    assert steps == [(1, 2), (2, 2)] * 2


def test_judged_positives_are_never_targets_below_an_unjudged_candidate() -> None:
    first_stage = [0.9, 0.8, 0.5, 0.2]
    positive = [False, False, True, False]

    soft = teacher_targets(first_stage, positive, RerankerRecipe(teacher_temperature=0.1))
    hard = teacher_targets(first_stage, positive, RerankerRecipe(teacher_temperature=None))

    assert sum(soft) == pytest.approx(1.0)
    assert soft[2] > soft[0] > soft[1] > soft[3] > 0  # unjudged keep the first stage's order
    assert hard == [0.0, 0.0, 1.0, 0.0]


def test_interpolation_round_trips_and_blends_min_max_scaled_scores(
    trained: Path, lists: list[CandidateList], tmp_path: Path
) -> None:
    from sentence_transformers import CrossEncoder

    folder = Path(shutil.copytree(trained, tmp_path / "blended"))
    Interpolation(0.5).save(folder)
    entry = lists[0]
    texts = [(entry.query, c.chunk.indexed_text) for c in entry.candidates]
    cross = CrossEncoder(str(trained)).predict(texts).tolist()
    first = [c.score for c in entry.candidates]

    def scaled(values: list[float]) -> list[float]:
        return [(v - min(values)) / (max(values) - min(values)) for v in values]

    expected = [0.5 * f + 0.5 * c for f, c in zip(scaled(first), scaled(cross), strict=True)]
    reranked = CrossEncoderReranker(str(folder)).rerank(entry.query, entry.candidates, 8)

    assert Interpolation.load(folder) == Interpolation(0.5)
    assert [r.score for r in reranked] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    Interpolation(1.0).save(folder)
    only_first = CrossEncoderReranker(str(folder)).rerank(entry.query, entry.candidates, 8)
    assert [r.chunk.chunk_id for r in only_first] == [c.chunk.chunk_id for c in entry.candidates]


def test_a_bad_interpolation_file_names_the_file_and_the_fix(trained: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / "bad"))
    (folder / INTERPOLATION_FILE).write_text('{"first_stage_weight": 1.5}')
    entry = hand_made_list(0, *TRIPLES[0][:2])

    with pytest.raises(RerankerError, match=r"interpolation\.json.*0\.\.1"):
        CrossEncoderReranker(str(folder)).rerank(entry.query, entry.candidates, 1)


def test_the_weight_is_chosen_on_held_out_training_queries(
    lists: list[CandidateList], tmp_path: Path
) -> None:
    budget = RerankerBudget(max_steps=2, batch_queries=4, group_size=4, max_length=64)
    recipe = RerankerRecipe(holdout_fraction=0.3)

    stats = train_reranker(lists, tmp_path, budget, recipe)

    assert stats.holdout_queries > 0 and stats.train_queries + stats.holdout_queries == len(lists)
    assert Interpolation.load(tmp_path).first_stage_weight == stats.first_stage_weight
    best = max(v for k, v in stats.holdout.items() if k.startswith("w="))
    assert stats.holdout[f"w={stats.first_stage_weight:.1f}"] == best


def write_synthetic_beir(folder: Path, split: str = "train") -> Path:
    """TRIPLES as a BEIR folder: each query judges its runbook passage relevant; the first query
    also judges a second, reworded passage relevant."""
    corpus = [BeirDoc(f"rel{i}", "", relevant) for i, (_, relevant, _) in enumerate(TRIPLES)]
    corpus += [BeirDoc(f"irr{i}", "", irrelevant) for i, (*_, irrelevant) in enumerate(TRIPLES)]
    corpus.append(BeirDoc("rel0b", "", "Redis password rotation: run the secrets job."))
    queries = {f"q{i}": query for i, (query, _, _) in enumerate(TRIPLES)}
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(len(TRIPLES))}
    qrels["q0"]["rel0b"] = 1
    write_beir(folder, corpus, queries, qrels, split)
    return folder


@pytest.fixture(scope="module")
def engine_over_triples(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> tuple[QueryEngine, dict[str, str], dict[str, dict[str, int]]]:
    root = tmp_path_factory.mktemp("beir")
    folder = write_synthetic_beir(root / "triples")

    def make_engine(release: Release | None) -> QueryEngine:
        assert release is not None
        return QueryEngine(Retriever.from_release(release, embedder), embedder.count_tokens)

    opened = open_benchmark(folder, "train", make_engine, embedder, root / "releases")
    return opened.engine, opened.queries, opened.qrels


@pytest.mark.slow
def test_negatives_are_filtered_against_the_qrels(engine_over_triples: tuple) -> None:
    engine, queries, qrels = engine_over_triples

    lists = {entry.query_id: entry for entry in candidate_lists(engine, queries, qrels, 10)}

    first = lists["q0"]
    docs = [c.chunk.doc_id for c in first.candidates]
    assert {"rel0", "rel0b"} <= set(docs)
    assert {docs[i] for i in first.positives} == {"rel0", "rel0b"}
    assert not {docs[i] for i in first.negatives} & {"rel0", "rel0b"}
    assert len(first.negatives) == len(docs) - 2


class RelevantLast:
    """A reranker that puts each query's relevant documents at the bottom of the candidates."""

    model_id = "relevant-last"

    def __init__(self, qrels: dict[str, dict[str, int]], queries: dict[str, str]) -> None:
        self.relevant = {queries[q]: set(grades) for q, grades in qrels.items()}

    def rerank(
        self, query: str, candidates: Sequence[RetrievedChunk], top_n: int
    ) -> list[RetrievedChunk]:
        order = sorted(candidates, key=lambda c: c.chunk.doc_id in self.relevant[query])
        return order[:top_n]


@pytest.mark.slow
def test_the_comparison_scores_only_the_given_split_as_computed_by_hand(
    engine_over_triples: tuple,
) -> None:
    engine, queries, qrels = engine_over_triples
    dev = split_queries(queries, 0.5, "dev")
    dev.pop("q0")  # two relevant documents: every other dev query has one
    assert 0 < len(dev) < len(queries) - 1

    result = compare_with_hybrid(engine, RelevantLast(qrels, queries), dev, qrels)

    # One relevant document per query and one chunk per document: a relevant document at hybrid
    # rank r scores 1 / log2(r + 1); moved to the bottom of the ten reranked candidates it ranks
    # 10th and scores 1 / log2(11).
    ranks = []
    for query_id, text in dev.items():
        found = [c.chunk.doc_id for c in engine.retriever.search(text, SearchMode.HYBRID, 10)]
        ranks.append(found.index(next(iter(qrels[query_id]))) + 1)
    assert result.queries == len(dev)
    assert result.hybrid == pytest.approx(sum(1 / math.log2(r + 1) for r in ranks) / len(dev))
    assert result.reranked == pytest.approx(1 / math.log2(11))
    assert result.gain == pytest.approx(result.reranked - result.hybrid)
