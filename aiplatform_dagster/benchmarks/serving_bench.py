"""(k) The serving API under concurrent load, over real HTTP on loopback.

The sample corpus is ingested with MiniLM into a temporary storage folder and published as a
serving release with no reranker; ``aiplatform serve`` runs in its own process, as in
production, and a lean asyncio load generator in this
process keeps ``clients`` keep-alive connections busy. The LLM is the test suite's local
OpenAI-protocol server in a third process, replying at once (no LLM can be reached here), so
what is measured is the platform: HTTP, auth, rate limit, routing, search, context, the model
call's round trip, citations, metrics and the audit log. The floor is ``GET /healthz`` under the
same load: what HTTP alone costs on this machine.

Measured: (1) cold: ``clients`` clients sharing the golden questions with the response cache
off, first with the PyTorch query encoder (the baseline), then after a hot swap to a release that
pins the fused float ONNX encoder (``AIPLATFORM_QUERY_INFERENCE=onnx``, what the later runs
serve); (2) replay: a synthetic query log in which questions repeat as a Zipf distribution
(s=1.1) over the 40 golden questions, replayed with the cache on and empty at the start; the
LLM cost the cache saved is priced at gpt-4o-mini's rates from the tokens each answer reports;
(3) cache warm: every question again once the cache holds them all. Every request must answer
200.
"""

import contextlib
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from aiplatform_dagster.benchmarks.http_load import HttpLoad, Load, floor_ms
from aiplatform_dagster.config import SAMPLE_CORPUS_DIR, load_settings
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.models.onnx_inference import ONNX
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.server import free_loopback_port

ZIPF_S = 1.1
READY_S = 180


def bench_serving(clients: int = 8, rounds: int = 3, replay: int = 300) -> dict[str, Any]:
    questions = list(load_judged_queries(GOLDEN_DIR)[0].values())
    with tempfile.TemporaryDirectory() as scratch, _fake_llm() as llm_url:
        storage = Path(scratch) / "storage"
        documents, _ = load_documents(SAMPLE_CORPUS_DIR)
        ingest(IndexRepository(storage / "ingestion"), documents, SentenceTransformerEmbedder())
        key = create_key(storage / "serving" / "api_keys.yaml", "bench", [Scope.QUERY], 10**9)
        environ = {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            "AIPLATFORM_LLM_BASE_URL": llm_url,
            "AIPLATFORM_LLM_MODEL": "gpt-4o-mini",
        }
        publication = publish_serving_release(load_settings(environ), "bench")
        if publication.flip is None:
            raise RuntimeError(f"the bench's release was not published: {publication.decision}")
        with _served(environ, Path(scratch) / "api.log") as base:
            load = HttpLoad(base, {"Authorization": f"Bearer {key}"})
            _asked(load, questions * 2, clients, use_cache=False)  # warm-up: models, pools
            floor = floor_ms(load, clients)
            cold_torch = _asked(load, _shuffled(questions * rounds), clients, use_cache=False)
            _swap_to_onnx(environ, base)
            _asked(load, questions * 2, clients, use_cache=False)  # warm-up after the swap
            cold = _asked(load, _shuffled(questions * rounds), clients, use_cache=False)
            log = _zipf_log(questions, replay)
            replayed = _asked(load, log, clients, use_cache=True)  # the cache starts empty
            _asked(load, questions, clients, use_cache=True)  # every question cached
            warm = _asked(load, _shuffled(questions * rounds), clients, use_cache=True)
    return {
        "clients": clients,
        "floor": percentiles(floor),
        "cold_torch": cold_torch.summary(),
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
    """One load run's replies to ``questions``, checked and priced."""

    def __init__(self, questions: Sequence[str], load: Load) -> None:
        self.latencies_ms = [reply.latency_ms for _, reply in load.replies]
        self.seconds = load.seconds
        self.errors: list[str] = []
        self.cost_usd = 0.0
        self.cost_by_question: dict[str, float] = {}
        self.questions = list(questions)
        for index, reply in load.replies:
            if reply.status != 200:
                self.errors.append(f"{reply.status}: {reply.body[:200]!r}")
                continue
            cost = float(reply.json()["usage"]["cost_usd"])
            self.cost_usd += cost
            if cost > 0:
                self.cost_by_question[questions[index]] = cost

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


def _asked(load: HttpLoad, questions: Sequence[str], clients: int, use_cache: bool) -> _Run:
    """``clients`` connections share the questions, in order, each asked once."""
    bodies = [{"question": question, "use_cache": use_cache} for question in questions]
    return _Run(questions, load.post_many("/v1/query", bodies, clients))


def _shuffled(questions: Sequence[str]) -> list[str]:
    shuffled = list(questions)
    random.Random(7).shuffle(shuffled)
    return shuffled


@contextmanager
def _served(environ: dict[str, str], log: Path) -> Iterator[str]:
    """``aiplatform serve`` in its own process, as it runs in production; yields its base URL.

    The load generator then competes with it only for the CPU, not for one interpreter's lock.
    """
    port = free_loopback_port()
    command = [sys.executable, "-m", "aiplatform_dagster.cli", "serve", "--port", str(port)]
    with log.open("w") as output:
        server = subprocess.Popen(
            command, env={**os.environ, **environ}, stdout=output, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, server, log)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=60)


def _swap_to_onnx(environ: dict[str, str], base: str) -> None:
    """Publish a release pinning the fused float ONNX encoder (through its gate) and wait until
    the running server has swapped to it."""
    settings = load_settings({**environ, "AIPLATFORM_QUERY_INFERENCE": ONNX})
    publication = publish_serving_release(settings, "bench")
    if publication.flip is None or publication.manifest.inference != ONNX:
        raise RuntimeError(f"the ONNX release was not published: {publication.decision}")
    deadline = time.monotonic() + READY_S
    while httpx.get(f"{base}/readyz", timeout=2).json()["release_id"] != publication.flip.release:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not swap to {publication.flip.release}")
        time.sleep(0.2)


def _wait_ready(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"aiplatform serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"aiplatform serve was not ready in {READY_S} s: {log.read_text()[-2000:]}")


@contextmanager
def _fake_llm() -> Iterator[str]:
    """The OpenAI-protocol stand-in in a process of its own, so it takes no time from the load
    generator's interpreter; yields its base URL."""
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    process = context.Process(target=_run_fake_llm, args=(urls, stop), daemon=True)
    process.start()
    try:
        yield _first_url(urls, process)
    finally:
        stop.set()
        process.join(timeout=10)


def _first_url(urls: Any, process: Any) -> str:
    deadline = time.monotonic() + READY_S
    while process.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            return urls.get(timeout=0.2)
    raise RuntimeError(f"the local LLM server did not start (exit code {process.exitcode})")


def _run_fake_llm(urls: Any, stop: Any) -> None:
    from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer() as llm:
        urls.put(llm.base_url)
        stop.wait()


def _zipf_log(questions: Sequence[str], size: int) -> list[str]:
    """A query log where a few questions are asked often and most rarely."""
    weights = [1 / rank**ZIPF_S for rank in range(1, len(questions) + 1)]
    return random.Random(11).choices(list(questions), weights=weights, k=size)
