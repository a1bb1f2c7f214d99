"""(i) The fine-tuned embedder against the packaged one, as the training group runs it.

Fine-tuned on a BEIR benchmark's train qrels (the dev queries held out), gated on dev, then
measured once on test: hybrid nDCG@10 with each embedder over the corpus indexed by itself.
Training throughput is a ratio against the same model encoding in the same process.
"""

import tempfile
import time
from pathlib import Path
from typing import Any

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.evaluation.beir import load_beir
from aiplatform_dagster.mlops.embedder_gate import score_embedders
from aiplatform_dagster.mlops.embedder_training import (
    EmbedderBudget,
    fine_tune_embedder,
    training_pairs,
)
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder, packaged_minilm_path


def bench_embedder(dataset: Path, dev_fraction: float = 0.2) -> dict[str, Any]:
    settings = load_settings()
    pairs = training_pairs(load_beir(dataset, "train"), dev_fraction)
    train = pairs[pairs["split"] == "train"]
    packaged = SentenceTransformerEmbedder()
    texts = list(train["query"]) + list(train["passage"])
    started = time.perf_counter()
    packaged.encode(texts)
    encode_pairs_per_s = len(train) / (time.perf_counter() - started)

    def report(step: int, total: int, loss: float) -> None:
        if step % 10 == 0 or step == total:
            print(f"  embedder fine-tuning: step {step}/{total}, loss {loss:.3f}", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "embedder"
        stats = fine_tune_embedder(
            packaged_minilm_path(), pairs, EmbedderBudget(), folder, progress=report
        )
        tuned = SentenceTransformerEmbedder(str(folder), name=f"bench-tuned-{stats.steps}")
        embedders = {"packaged": packaged, "tuned": tuned}
        dev_ids = set(pairs.loc[pairs["split"] == "dev", "query_id"])
        dev = score_embedders(settings, dataset, "train", dev_ids, embedders)
        test_ids = set(load_beir(dataset, "test").qrels)
        test = score_embedders(settings, dataset, "test", test_ids, embedders)
    return {
        "train_pairs": stats.pairs,
        "steps": stats.steps,
        "train_seconds": stats.seconds,
        "train_pairs_per_s": stats.pairs_per_second,
        "encode_pairs_per_s": encode_pairs_per_s,
        "dev_packaged": dev.ndcg["packaged"],
        "dev_tuned": dev.ndcg["tuned"],
        "dev_queries": dev.queries,
        "test_packaged": test.ndcg["packaged"],
        "test_tuned": test.ndcg["tuned"],
        "test_queries": test.queries,
    }
