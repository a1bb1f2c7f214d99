"""(k) The serving API under concurrent load, over real HTTP on loopback.

The sample corpus is ingested with MiniLM into a temporary storage folder and published as a
serving release with no reranker; ``create_app`` runs under uvicorn in this process. The LLM is
the test suite's local OpenAI-protocol server replying at once (no LLM can be reached here), so
what is measured is the platform: HTTP, auth, rate limit, routing, search, context, the model
call's round trip, citations, metrics and the audit log.

Measured: (1) cold: ``clients`` clients sharing the golden questions with the response cache
off; (2) replay: a synthetic query log in which questions repeat as a Zipf distribution
(s=1.1) over the 40 golden questions, replayed with the cache on and empty at the start; the
LLM cost the cache saved is priced at gpt-4o-mini's rates from the tokens each answer reports;
(3) cache warm: every question again once the cache holds them all. Every request must answer
200.
"""

import random
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR, load_settings
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.server import serving_in_thread

ZIPF_S = 1.1


def bench_serving(clients: int = 8, rounds: int = 3, replay: int = 300) -> dict[str, Any]:
    from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

    questions = list(load_judged_queries(GOLDEN_DIR)[0].values())
    with tempfile.TemporaryDirectory() as scratch, FakeOpenAIServer() as llm:
        storage = Path(scratch) / "storage"
        documents, _ = load_documents(SAMPLE_CORPUS_DIR)
        ingest(IndexRepository(storage / "ingestion"), documents, SentenceTransformerEmbedder())
        key = create_key(storage / "serving" / "api_keys.yaml", "bench", [Scope.QUERY], 10**9)
        settings = load_settings(
            {
                "AIPLATFORM_STORAGE_DIR": str(storage),
                "AIPLATFORM_MONITORING_QUERY_LOG": "false",
                "AIPLATFORM_AGENTS_REGISTRY": "",
                "AIPLATFORM_LLM_BASE_URL": llm.base_url,
                "AIPLATFORM_LLM_MODEL": "gpt-4o-mini",
            }
        )
        publication = publish_serving_release(settings, "bench")
        if publication.flip is None:
            raise RuntimeError(f"the bench's release was not published: {publication.decision}")
        with serving_in_thread(create_app(settings)) as base:
            ask = _Asker(base, key)
            ask.many(questions[:clients], 1, use_cache=False)  # warm-up: model loaded, pools
            cold = ask.many(questions, clients, use_cache=False, repeat=rounds)
            log = _zipf_log(questions, replay)
            replayed = ask.many(log, clients, use_cache=True, keep_order=True)  # cache empty
            ask.many(questions, clients, use_cache=True)  # every question cached
            warm = ask.many(questions, clients, use_cache=True, repeat=rounds)
    return {
        "clients": clients,
        "cold": cold.summary(),
        "warm": warm.summary(),
        "replay": {
            **replayed.summary(),
            "distinct": len(set(log)),
            "repeat_share": 1 - len(set(log)) / len(log),
            "cost_usd": replayed.cost_usd,
            "cost_without_cache_usd": replayed.cost_without_cache(),
        },
    }


class _Run:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.cost_usd = 0.0
        self.cost_by_question: dict[str, float] = {}
        self.seconds = 0.0
        self.questions: list[str] = []
        self.lock = threading.Lock()

    def summary(self) -> dict[str, float]:
        return {
            "requests": len(self.latencies_ms),
            "errors": len(self.errors),
            "throughput_rps": len(self.latencies_ms) / self.seconds if self.seconds else 0.0,
            **percentiles(self.latencies_ms),
        }

    def cost_without_cache(self) -> float:
        """What the run would have cost had every request called the model (each question
        was generated, and priced, the first time it came; the cache started empty)."""
        return sum(self.cost_by_question.get(question, 0.0) for question in self.questions)


class _Asker:
    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}"}

    def many(
        self,
        questions: Sequence[str],
        clients: int,
        use_cache: bool,
        repeat: int = 1,
        keep_order: bool = False,
    ) -> _Run:
        """``clients`` threads share the work list (each question ``repeat`` times)."""
        run = _Run()
        work = [q for _ in range(repeat) for q in questions]
        if not keep_order:
            random.Random(7).shuffle(work)
        run.questions = list(work)
        pending = iter(work)
        take = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=self.base, headers=self.headers, timeout=60) as http:
                while True:
                    with take:
                        question = next(pending, None)
                    if question is None:
                        return
                    self._ask(http, run, question, use_cache)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run.seconds = time.perf_counter() - started
        return run

    def _ask(self, http: httpx.Client, run: _Run, question: str, use_cache: bool) -> None:
        started = time.perf_counter()
        response = http.post("/v1/query", json={"question": question, "use_cache": use_cache})
        elapsed_ms = (time.perf_counter() - started) * 1000
        with run.lock:
            run.latencies_ms.append(elapsed_ms)
            if response.status_code != 200:
                run.errors.append(f"{response.status_code}: {response.text[:200]}")
                return
            cost = float(response.json()["usage"]["cost_usd"])
            run.cost_usd += cost
            if cost > 0:
                run.cost_by_question[question] = cost


def _zipf_log(questions: Sequence[str], size: int) -> list[str]:
    """A query log where a few questions are asked often and most rarely."""
    weights = [1 / rank**ZIPF_S for rank in range(1, len(questions) + 1)]
    return random.Random(11).choices(list(questions), weights=weights, k=size)
