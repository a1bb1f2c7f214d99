"""Synthetic query traffic: a steady day, and a day whose questions and results moved.

Shapes follow what the query path produces: word counts around 9 (shifted: around 22), top
scores around 0.6 (shifted: 0.35), mostly hybrid routes (shifted: mostly dense), and unit
embeddings around a fixed direction (shifted: around another one).
"""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from aiplatform_dagster.monitoring.features import QueryRecord
from aiplatform_dagster.monitoring.query_log import ParquetQueryLog

DIM = 16
ROUTES = ("bm25", "dense", "hybrid")


def day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def traffic(
    day: str, n: int, *, shifted: bool = False, seed: int = 0, dim: int = DIM
) -> list[QueryRecord]:
    """``n`` queries spread over the UTC ``day``; the same seed gives the same records."""
    rng = np.random.default_rng(seed)
    start = day_start(day)
    centre = np.zeros(dim, dtype=np.float32)
    centre[1 if shifted else 0] = 3.0
    words = rng.poisson(22 if shifted else 9, n) + 1
    top = rng.normal(0.35 if shifted else 0.6, 0.1, n)
    routes = rng.choice(ROUTES, n, p=(0.1, 0.7, 0.2) if shifted else (0.2, 0.2, 0.6))
    records = []
    for i in range(n):
        vector = centre + rng.standard_normal(dim).astype(np.float32)
        records.append(
            QueryRecord(
                ts=start + timedelta(seconds=int(i * 86_399 / n)),
                question_words=int(words[i]),
                question_chars=int(words[i] * 6 + rng.integers(0, 6)),
                top_score=float(top[i]),
                score_margin=float(abs(rng.normal(0.1, 0.05))),
                latency_ms=float(rng.lognormal(3.0, 0.3)),
                script="latin",
                route=str(routes[i]),
                embedding=vector / np.linalg.norm(vector),
            )
        )
    return records


def log_traffic(storage: Path, records: list[QueryRecord]) -> None:
    """Append ``records`` to the Parquet query log under the storage folder ``storage``."""
    log = ParquetQueryLog(storage / "monitoring" / "query_log")
    for record in records:
        log.append(record)
    log.flush()
