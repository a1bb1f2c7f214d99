"""A cross-encoder reranker trained on the platform's own labelled queries.

No cross-encoder weights exist offline, so the model starts from the packaged MiniLM
bi-encoder with a fresh one-logit head. A naive fine-tune of that start (1 positive + 7 hard
negatives from the hybrid top 30, one epoch) ranked SciFact far worse than hybrid alone: the
hard "negatives" hold unjudged relevant abstracts, and a short budget cannot turn a
bi-encoder into a good cross-encoder. The recipe here answers both causes:

- negatives are filtered against the qrels (a judged relevant document is never a negative);
- listwise distillation: per query the model fits a target distribution over its sampled
  candidates, the first-stage (fused) scores softened by a temperature with the judged
  positives lifted above them, so an unjudged document the retriever ranks high is not
  pushed down as if it were known irrelevant (``teacher_temperature=None`` trains on the
  hard labels instead, for comparison);
- score interpolation: the saved model blends its score with the first-stage score
  (``rerank.Interpolation``), the weight chosen on held-out *training* queries, so a weak
  model refines the fused ranking instead of replacing it. Dev stays untouched for the gate.

The split by query is ``mlops.router.in_dev_split``, the one the router and the gate use.
"""

import copy
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiplatform_dagster.evaluation.metrics import evaluate
from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode, document_rankers
from aiplatform_dagster.mlops.router import in_dev_split
from aiplatform_dagster.models.embedders import packaged_minilm_path
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions, documents_of
from aiplatform_dagster.rag.query.rerank import Interpolation, Reranker, min_max
from aiplatform_dagster.rag.query.retriever import RetrievedChunk, SearchMode

METRIC = "ndcg@10"
HOLDOUT_SALT = "reranker-holdout:"
"""Salts the hash that holds training queries out to choose the interpolation weight, so
that part is independent of the dev split."""
WEIGHT_GRID = tuple(step / 10 for step in range(11))
Split = Literal["train", "dev"]
Progress = Callable[[int, int], None]
"""Called with (steps done, steps total)."""


@dataclass(frozen=True)
class RerankerBudget:
    """How much compute a training run gets; every field is a knob of cost, not of the loss."""

    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimiser steps even within the first epoch."""
    batch_queries: int = 4
    """Queries per optimiser step; each brings ``group_size`` passages."""
    group_size: int = 8
    """Passages scored together per query: one positive and ``group_size - 1`` others."""
    candidates: int = 30
    """Hybrid candidates per training query, from which the group is sampled."""
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    """The fresh scoring head's rate: at the encoder's rate it stays near its tiny random
    start for a short budget, every score ties and the loss stays at chance (seen here)."""
    max_length: int = 256
    """Tokens of query plus passage; SciFact chunks are at most 240 embedder tokens."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_queries < 1 or self.group_size < 2:
            raise ValueError(
                f"need epochs >= 1, batch_queries >= 1 and group_size >= 2, got {self}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or None, got {self.max_steps}")


@dataclass(frozen=True)
class RerankerRecipe:
    """What the model learns from (see the module docstring for why)."""

    teacher_temperature: float | None = 0.1
    """Softens the min-max scaled first-stage scores into targets; None: hard labels."""
    positive_margin: float = 0.5
    """How far above the best first-stage score a judged positive's target sits (scaled)."""
    interpolate: bool = True
    """Choose a first-stage weight on held-out training queries and save it with the model."""
    holdout_fraction: float = 0.2
    """Share of the training queries kept out of training to choose that weight."""
    base_model: str = field(default_factory=packaged_minilm_path)


@dataclass(frozen=True)
class CandidateList:
    """One labelled query and its hybrid candidates, best first."""

    query_id: str
    query: str
    candidates: tuple[RetrievedChunk, ...]
    relevant: frozenset[str]
    """Documents the qrels judge relevant (grade > 0)."""

    def is_relevant(self, candidate: RetrievedChunk) -> bool:
        return candidate.chunk.doc_id in self.relevant

    @property
    def positives(self) -> list[int]:
        return [i for i, c in enumerate(self.candidates) if self.is_relevant(c)]

    @property
    def negatives(self) -> list[int]:
        """Candidates the qrels do not judge relevant: the only ones ever trained down."""
        return [i for i, c in enumerate(self.candidates) if not self.is_relevant(c)]


@dataclass(frozen=True)
class TrainingStats:
    steps: int
    pairs: int
    seconds: float
    pairs_per_second: float
    loss: float
    """Mean loss over the last tenth of the steps."""
    first_stage_weight: float
    holdout: dict[str, float]
    """nDCG@10 on the held-out training queries: hybrid, and reranked at each weight tried."""
    device: str
    train_queries: int
    holdout_queries: int


@dataclass(frozen=True)
class RerankComparison:
    """The gate's evidence: the same queries ranked by hybrid alone and hybrid + reranker."""

    queries: int
    hybrid: float
    reranked: float

    @property
    def gain(self) -> float:
        return self.reranked - self.hybrid


def split_queries(queries: Mapping[str, str], dev_fraction: float, split: Split) -> dict[str, str]:
    """The queries on one side of the shared stable split."""
    want_dev = split == "dev"
    return {
        qid: text for qid, text in queries.items() if in_dev_split(qid, dev_fraction) == want_dev
    }


def candidate_lists(
    engine: QueryEngine,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    candidates: int,
    options: QueryOptions | None = None,
) -> list[CandidateList]:
    """Hybrid candidates per query; only queries with a judged positive and another candidate
    among them can teach a ranking, so the others are left out."""
    hybrid = (options or QueryOptions()).hybrid
    lists = []
    for query_id, text in queries.items():
        relevant = frozenset(d for d, grade in qrels.get(query_id, {}).items() if grade > 0)
        found = engine.retriever.search(text, SearchMode.HYBRID, candidates, hybrid)
        entry = CandidateList(query_id, text, tuple(found), relevant)
        if entry.positives and entry.negatives:
            lists.append(entry)
    return lists


def teacher_targets(
    first_stage: Sequence[float], positive: Sequence[bool], recipe: RerankerRecipe
) -> list[float]:
    """Target probabilities over one group: softmax of the scaled first-stage scores over the
    temperature, judged positives at 1 + margin (above any first-stage score); hard labels
    (uniform over the positives) when the recipe has no temperature."""
    if recipe.teacher_temperature is None:
        count = sum(positive)
        return [1.0 / count if is_positive else 0.0 for is_positive in positive]
    scaled = min_max(first_stage)
    logits = [
        (1.0 + recipe.positive_margin if is_positive else score) / recipe.teacher_temperature
        for score, is_positive in zip(scaled, positive, strict=True)
    ]
    top = max(logits)
    weights = [math.exp(logit - top) for logit in logits]
    return [w / sum(weights) for w in weights]


def pick_device() -> str:
    """The GPU when the step runs on the GPU pool; CPU anywhere else."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train_reranker(
    lists: Sequence[CandidateList],
    output_dir: Path,
    budget: RerankerBudget | None = None,
    recipe: RerankerRecipe | None = None,
    options: QueryOptions | None = None,
    progress: Progress | None = None,
    device: str | None = None,
) -> TrainingStats:
    """Fine-tune a cross-encoder on ``lists`` and save a folder ``CrossEncoderReranker`` loads.

    With ``recipe.interpolate`` a stable share of the lists is held out of training to choose
    the first-stage weight (written to the folder's ``interpolation.json``).
    """
    budget = budget or RerankerBudget()
    recipe = recipe or RerankerRecipe()
    options = options or QueryOptions()
    device = device or pick_device()
    if recipe.interpolate:
        held = [in_dev_split(HOLDOUT_SALT + e.query_id, recipe.holdout_fraction) for e in lists]
        holdout = [e for e, out in zip(lists, held, strict=True) if out]
        training = [e for e, out in zip(lists, held, strict=True) if not out]
    else:
        holdout, training = [], list(lists)
    if not training or (recipe.interpolate and not holdout):
        raise ValueError(
            f"{len(lists)} usable training queries leave {len(training)} to train on and "
            f"{len(holdout)} to choose the interpolation weight: both need at least one. Label "
            "more queries, or set interpolate=False"
        )
    model, stats = _fit(training, budget, recipe, device, progress)
    weight, holdout_scores = (
        _choose_weight(model, holdout, options.candidates) if holdout else (0.0, {})
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    Interpolation(weight).save(output_dir)
    return TrainingStats(
        **stats,
        first_stage_weight=weight,
        holdout=holdout_scores,
        device=device,
        train_queries=len(training),
        holdout_queries=len(holdout),
    )


def _fit(
    lists: Sequence[CandidateList],
    budget: RerankerBudget,
    recipe: RerankerRecipe,
    device: str,
    progress: Progress | None,
) -> tuple[Any, dict[str, Any]]:
    """The plain PyTorch loop: listwise cross-entropy against the targets, AdamW with linear
    warm-up (a tenth of the steps) and decay."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(budget.seed)
    sampler = random.Random(budget.seed)
    model = CrossEncoder(
        recipe.base_model, num_labels=1, device=device, max_length=budget.max_length
    )
    network, tokenizer = model.model, model.tokenizer
    per_epoch = math.ceil(len(lists) / budget.batch_queries)
    total = per_epoch * budget.epochs
    if budget.max_steps is not None:
        total = min(total, budget.max_steps)
    head = [p for name, p in network.named_parameters() if name.startswith("classifier.")]
    encoder = [p for name, p in network.named_parameters() if not name.startswith("classifier.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder, "lr": budget.learning_rate},
            {"params": head, "lr": budget.head_learning_rate},
        ]
    )
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, total // 10), total)
    network.train()
    losses: list[float] = []
    pairs = 0
    started = time.perf_counter()
    while len(losses) < total:
        order = list(lists)
        sampler.shuffle(order)
        for first in range(0, len(order), budget.batch_queries):
            if len(losses) == total:
                break
            groups = [
                _sample_group(e, budget.group_size, sampler)
                for e in order[first : first + budget.batch_queries]
            ]
            texts = [
                (e.query, e.candidates[i].chunk.indexed_text) for e, idx in groups for i in idx
            ]
            encoded = tokenizer(
                [q for q, _ in texts],
                [p for _, p in texts],
                padding=True,
                truncation=True,
                max_length=budget.max_length,
                return_tensors="pt",
            ).to(device)
            logits = network(**encoded).logits.view(-1)
            loss = torch.zeros((), device=device)
            offset = 0
            for entry, indices in groups:
                group_logits = logits[offset : offset + len(indices)]
                offset += len(indices)
                targets = torch.tensor(
                    teacher_targets(
                        [entry.candidates[i].score for i in indices],
                        [entry.is_relevant(entry.candidates[i]) for i in indices],
                        recipe,
                    ),
                    device=device,
                )
                loss = loss - (targets * torch.log_softmax(group_logits, dim=0)).sum()
            loss = loss / len(groups)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            pairs += len(texts)
            if progress:
                progress(len(losses), total)
    seconds = time.perf_counter() - started
    network.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return model, {
        "steps": len(losses),
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_second": pairs / seconds if seconds > 0 else 0.0,
        "loss": sum(tail) / len(tail),
    }


def _sample_group(
    entry: CandidateList, size: int, sampler: random.Random
) -> tuple[CandidateList, list[int]]:
    """One judged positive and up to ``size - 1`` other candidates, in first-stage order."""
    positive = sampler.choice(entry.positives)
    others = [i for i in range(len(entry.candidates)) if i != positive]
    chosen = sampler.sample(others, min(size - 1, len(others)))
    return entry, sorted([positive, *chosen])


def _choose_weight(
    model: Any, holdout: Sequence[CandidateList], top: int
) -> tuple[float, dict[str, float]]:
    """The first-stage weight with the best nDCG@10 on the held-out queries, ranking exactly as
    the query path does: the top ``top`` candidates reordered, the rest kept in hybrid order.
    Ties go to the larger weight, the one closer to the ranking already measured."""
    cross = {
        e.query_id: model.predict(
            [(e.query, c.chunk.indexed_text) for c in e.candidates[:top]],
            batch_size=32,
            show_progress_bar=False,
        )
        for e in holdout
    }
    qrels = {e.query_id: dict.fromkeys(e.relevant, 1) for e in holdout}
    hybrid = {e.query_id: documents_of(e.candidates) for e in holdout}
    scores = {"hybrid": evaluate(hybrid, qrels, [METRIC])[METRIC]}
    for weight in WEIGHT_GRID:
        run = {}
        for e in holdout:
            head = e.candidates[:top]
            final = Interpolation(weight).blend([c.score for c in head], cross[e.query_id])
            order = sorted(range(len(head)), key=lambda i: -final[i])
            run[e.query_id] = documents_of([*(head[i] for i in order), *e.candidates[top:]])
        scores[f"w={weight:.1f}"] = evaluate(run, qrels, [METRIC])[METRIC]
    best = max(reversed(WEIGHT_GRID), key=lambda w: scores[f"w={w:.1f}"])
    return best, scores


def compare_with_hybrid(
    engine: QueryEngine,
    reranker: Reranker,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    options: QueryOptions | None = None,
) -> RerankComparison:
    """nDCG@10 of hybrid + ``reranker`` against hybrid alone over ``engine``, on ``queries``
    (the caller picks the split: ``split_queries(..., "dev")`` for the gate)."""
    with_reranker = copy.copy(engine)
    with_reranker.reranker = reranker
    rankers, _ = document_rankers(
        with_reranker, [EvalMode.HYBRID, EvalMode.RERANK], options=options
    )
    judged = {qid: dict(qrels[qid]) for qid in queries if qid in qrels}
    scores = {
        mode: evaluate({qid: rank(text) for qid, text in queries.items()}, judged, [METRIC])[METRIC]
        for mode, rank in rankers.items()
    }
    return RerankComparison(len(judged), scores["hybrid"], scores["rerank"])
