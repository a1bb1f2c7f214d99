"""The ``aiplatform`` command: search, ask and evaluate from a terminal."""

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode
from aiplatform_dagster.rag.query.retriever import FusionMethod, SearchMode

SNIPPET_CHARS = 240


@contextmanager
def _resources() -> Iterator[Any]:
    """Resources exactly as the code location builds them, initialised as Dagster would
    (environment-backed secrets resolved); Dagster is imported only once a command runs."""
    import dagster as dg

    from aiplatform_dagster.defs.resources import default_resources

    with dg.build_resources(default_resources()) as resources:
        yield resources


def _search(args: argparse.Namespace, resources: Any) -> int:
    engine = resources.rag.get_engine()
    results = engine.retriever.search(args.query, SearchMode(args.mode), args.k)
    if args.json:
        rows = [
            {
                "rank": rank,
                "score": r.score,
                "chunk_id": r.chunk.chunk_id,
                "doc_id": r.chunk.doc_id,
                "title": r.chunk.title,
                "source": r.chunk.source_path,
                "text": r.chunk.text,
            }
            for rank, r in enumerate(results, start=1)
        ]
        print(json.dumps(rows))
        return 0
    if not results:
        print("No matching chunks.")
    for rank, result in enumerate(results, start=1):
        chunk = result.chunk
        snippet = " ".join(chunk.text.split())[:SNIPPET_CHARS]
        print(f"{rank:>2}. [{result.score:.4f}] {chunk.title}")
        print(f"    {chunk.source_path} (chunk {chunk.position})")
        print(f"    {snippet}")
    return 0


def _ask(args: argparse.Namespace, resources: Any) -> int:
    engine = resources.rag.get_engine()
    defaults = engine.defaults
    options = replace(
        defaults.with_hybrid(args.dense_weight, args.fusion),
        mode=SearchMode(args.mode) if args.mode else None,
        candidates=args.candidates or defaults.candidates,
        top_n=args.top_n or defaults.top_n,
        use_cache=not args.no_cache,
    )
    engine.warm_up()
    answer = engine.ask(args.question, options)
    cache = engine.cache.stats() if engine.cache is not None else None
    if args.json:
        data = answer.as_dict()
        if cache is not None:
            data["cache"] = {"hits": cache.hits, "misses": cache.misses, "hit_rate": cache.hit_rate}
        print(json.dumps(data))
        return 0
    print(answer.text)
    print()
    for citation in answer.citations:
        print(f"[{citation.number}] {citation.title} — {citation.source_path}")
    print()
    print(f"answer: {answer.kind.value}" + (f" by {answer.model}" if answer.model else ""))
    print(f"route: {answer.route.mode.value} ({answer.route.reason})")
    print(f"reranked: {'yes' if answer.reranked else 'no'}")
    usage = answer.usage
    print(
        f"tokens: {usage.prompt_tokens} in / {usage.completion_tokens} out, "
        f"cost ${usage.cost_usd:.6f}" + (" (cache hit)" if usage.cached else "")
    )
    timings = ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in answer.timings_ms.items())
    print(f"timings: {timings} (total {answer.total_ms:.1f} ms)")
    if cache is not None and cache.hits + cache.misses:
        print(f"cache: {cache.hit_rate:.0%} hit rate over {cache.hits + cache.misses} LLM lookups")
    for note in answer.notes:
        print(f"note: {note}")
    return 0


def _eval_retrieval(args: argparse.Namespace, resources: Any) -> int:
    from tqdm import tqdm

    from aiplatform_dagster.evaluation.runner import RetrievalEvalRequest, run_retrieval_eval
    from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
    from aiplatform_dagster.rag.query.rerank import load_reranker

    rag = resources.rag
    if args.reranker:
        rag = rag.model_copy(update={"reranker_model": args.reranker})
    request = RetrievalEvalRequest(
        benchmark=Path(args.dataset) if args.dataset else None,
        split=args.split,
        modes=[EvalMode(mode) for mode in args.modes.split(",")],
        depth=args.depth,
        options=rag.query_options().with_hybrid(args.dense_weight, args.fusion),
        chunking=ChunkingConfig(args.chunk_tokens, args.overlap_tokens),
    )
    bars: dict[str, tqdm] = {}

    def advance(name: str, done: int, total: int, unit: str) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, desc=name, unit=unit)
        bars[name].update(done - bars[name].n)

    def embedded(done: int, total: int) -> None:
        advance("embedding chunks", done, total, "chunk")

    def queried(mode: str, done: int, total: int) -> None:
        advance(f"{mode} queries", done, total, "query")

    load_reranker(rag.reranker_model)  # fail fast on a bad model before embedding a corpus
    result = run_retrieval_eval(
        request,
        rag.get_engine,
        resources.embedder.get_embedder(),
        Path(resources.storage.root_dir) / "benchmarks",
        embedded,
        queried,
    )
    for bar in bars.values():
        bar.close()
    _print_eval_table(result)
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0


def _print_eval_table(result: Any) -> None:
    print(f"\n{result.benchmark}: {result.queries} queries")
    columns: list[str] = []
    for report in result.reports.values():
        columns.extend(c for c in report.as_dict() if c not in columns)
    print(f"{'mode':<8}" + "".join(f"{c:>13}" for c in columns))
    for mode, report in result.reports.items():
        values = report.as_dict()
        print(f"{mode:<8}" + "".join(f"{values.get(c, float('nan')):>13.4f}" for c in columns))
    for mode, reason in result.skipped.items():
        print(f"{mode:<8} skipped: {reason}")


def build_parser() -> argparse.ArgumentParser:
    from aiplatform_dagster.rag.ingest.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS

    parser = argparse.ArgumentParser(prog="aiplatform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="Rank chunks for a query.")
    search.add_argument("query")
    search.add_argument("--mode", choices=[m.value for m in SearchMode], default="hybrid")
    search.add_argument("-k", type=int, default=5, help="How many chunks to show.")
    search.add_argument("--json", action="store_true", help="Print results as JSON.")
    search.set_defaults(handler=_search)

    ask = commands.add_parser("ask", help="Answer a question with cited sources.")
    ask.add_argument("question")
    ask.add_argument(
        "--mode", choices=[m.value for m in SearchMode], help="Skip the router; force a mode."
    )
    ask.add_argument("--candidates", type=int, help="Chunks the reranker scores (10).")
    ask.add_argument("--top-n", type=int, help="Chunks given to the LLM (3).")
    ask.add_argument("--dense-weight", type=float, help="Semantic share of hybrid (0.7).")
    ask.add_argument("--fusion", choices=[f.value for f in FusionMethod], help="score or rrf")
    ask.add_argument("--no-cache", action="store_true", help="Bypass the response cache.")
    ask.add_argument("--json", action="store_true", help="Print the answer as JSON.")
    ask.set_defaults(handler=_ask)

    evaluate = commands.add_parser("eval", help="Evaluate the platform.")
    kinds = evaluate.add_subparsers(dest="kind", required=True)
    retrieval = kinds.add_parser("retrieval", help="nDCG/recall/precision/MRR and latency.")
    retrieval.add_argument(
        "--dataset", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/); default: golden set"
    )
    retrieval.add_argument("--split", default="test")
    retrieval.add_argument("--modes", default=",".join(m.value for m in EvalMode))
    retrieval.add_argument("--depth", type=int, default=100, help="Documents ranked per query.")
    retrieval.add_argument("--dense-weight", type=float, help="Semantic share of hybrid (0.7).")
    retrieval.add_argument("--fusion", choices=[f.value for f in FusionMethod], help="score or rrf")
    retrieval.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    retrieval.add_argument("--overlap-tokens", type=int, default=DEFAULT_OVERLAP_TOKENS)
    retrieval.add_argument("--reranker", help="Override AIPLATFORM_RERANKER_MODEL.")
    retrieval.add_argument(
        "--json", action="store_true", help="End with one JSON line of the numbers."
    )
    retrieval.set_defaults(handler=_eval_retrieval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from aiplatform_dagster.models.llm import LLMError

    args = build_parser().parse_args(argv)
    try:
        with _resources() as resources:
            return args.handler(args, resources)
    except (FileNotFoundError, ValueError, ConnectionError, LLMError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
