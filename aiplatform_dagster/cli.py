"""The ``aiplatform`` command: search, ask, evaluate, manage releases and models, run agents.

It reads the same configuration as the Dagster code location (``aiplatform_dagster/config.py``)
and builds the query path with the same factory, without importing Dagster.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiplatform_dagster.agents.commands import add_agent_commands
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode
from aiplatform_dagster.rag.query.retriever import FusionMethod, SearchMode
from aiplatform_dagster.serving.commands import add_serving_commands
from aiplatform_dagster.who import cli_operator

SNIPPET_CHARS = 240
FUSIONS = [method.value for method in FusionMethod]


class UsageError(PlatformError):
    """A command line that cannot do what was asked."""


def positive_int(text: str) -> int:
    """An argparse type: 0 or a negative count is a mistake, never "use the default"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _search(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.rag import factory

    if not args.query.strip():
        raise UsageError("search needs a query: an empty one matches nothing in particular")
    engine = factory.build_query_engine(settings)
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


def _ask(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.monitoring.recorder import start_recorder
    from aiplatform_dagster.rag import factory

    embedder = factory.current_embedder(settings)
    recorder = start_recorder(settings, embedder.encode)  # questions asked feed drift reports
    engine = factory.build_query_engine(settings, embedder=embedder, recorder=recorder)
    defaults = engine.defaults
    options = replace(
        defaults.with_hybrid(args.dense_weight, args.fusion),
        mode=SearchMode(args.mode) if args.mode else None,
        candidates=defaults.candidates if args.candidates is None else args.candidates,
        top_n=defaults.top_n if args.top_n is None else args.top_n,
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


def _eval_retrieval(args: argparse.Namespace, settings: Any) -> int:
    from tqdm import tqdm

    from aiplatform_dagster.evaluation.runner import RetrievalEvalRequest, run_retrieval_eval
    from aiplatform_dagster.rag import factory
    from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
    from aiplatform_dagster.rag.query.rerank import load_reranker

    if args.reranker:
        settings = settings.replace(reranker={"model": args.reranker})
    request = RetrievalEvalRequest(
        benchmark=Path(args.dataset) if args.dataset else None,
        split=args.split,
        modes=[EvalMode(mode) for mode in args.modes.split(",")],
        depth=args.depth,
        options=factory.query_options(settings).with_hybrid(args.dense_weight, args.fusion),
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

    load_reranker(settings.reranker.model)  # fail fast on a bad model before embedding a corpus
    result = run_retrieval_eval(
        request,
        lambda release: factory.build_query_engine(settings, release),
        factory.build_embedder(settings),
        settings.paths.storage_dir / "benchmarks",
        embedded,
        queried,
    )
    for bar in bars.values():
        bar.close()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _print_eval_table(result)
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0


def _print_eval_table(result: Any) -> None:
    print(f"\n{result.benchmark}: {result.queries} queries, release {result.release_id}")
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
    search.add_argument("-k", type=positive_int, default=5, help="How many chunks to show.")
    search.add_argument("--json", action="store_true", help="Print results as JSON.")
    search.set_defaults(handler=_search)

    ask = commands.add_parser("ask", help="Answer a question with cited sources.")
    ask.add_argument("question")
    ask.add_argument(
        "--mode", choices=[m.value for m in SearchMode], help="Skip the router; force a mode."
    )
    ask.add_argument("--candidates", type=positive_int, help="Chunks the reranker scores (10).")
    ask.add_argument("--top-n", type=positive_int, help="Chunks given to the LLM (3).")
    ask.add_argument("--dense-weight", type=float, help="Semantic share of hybrid (0.7).")
    ask.add_argument("--fusion", choices=FUSIONS, help="Hybrid fusion (score).")
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
    retrieval.add_argument(
        "--depth", type=positive_int, default=100, help="Documents ranked per query."
    )
    retrieval.add_argument("--dense-weight", type=float, help="Semantic share of hybrid (0.7).")
    retrieval.add_argument("--fusion", choices=FUSIONS, help="Hybrid fusion (score).")
    retrieval.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    retrieval.add_argument("--overlap-tokens", type=int, default=DEFAULT_OVERLAP_TOKENS)
    retrieval.add_argument("--reranker", help="Override AIPLATFORM_RERANKER_MODEL.")
    retrieval.add_argument(
        "--json", action="store_true", help="End with one JSON line of the numbers."
    )
    retrieval.set_defaults(handler=_eval_retrieval)

    config = commands.add_parser("config", help="Every setting, its variable and its value.")
    config.set_defaults(handler=_config)

    index = commands.add_parser("index", help="List, inspect and roll back index releases.")
    actions = index.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="Releases, newest last, with their pointers.")
    listing.set_defaults(handler=_index_list)
    show = actions.add_parser("show", help="A release's manifest (default: current).")
    show.add_argument("release", nargs="?")
    show.set_defaults(handler=_index_show)
    rollback = actions.add_parser(
        "rollback", help="Point current back at its predecessor (or --to RELEASE)."
    )
    rollback.add_argument("--to", help="Release id to make current.")
    rollback.set_defaults(handler=_index_rollback)

    model = commands.add_parser("model", help="Registered models and their aliases (MLflow).")
    model_actions = model.add_subparsers(dest="action", required=True)
    model_list = model_actions.add_parser("list", help="Models, aliases and recent moves.")
    model_list.set_defaults(handler=_model_list)
    promote = model_actions.add_parser(
        "promote", help="Make VERSION staging, champion and production."
    )
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="Why; kept in the alias history.")
    promote.set_defaults(handler=_model_promote)
    model_rollback = model_actions.add_parser(
        "rollback", help="Champion and production back to the previous champion."
    )
    model_rollback.add_argument("name")
    model_rollback.add_argument("--reason", required=True, help="Why; kept in the alias history.")
    model_rollback.set_defaults(handler=_model_rollback)

    add_agent_commands(commands)
    add_serving_commands(commands)
    return parser


def _config(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.config import describe

    rows = describe(settings)
    width = max(len(row.name) for row in rows)
    for row in rows:
        changed = "" if row.value == row.default else "   (default " + row.default + ")"
        print(f"{row.name:<{width}}  {row.value}{changed}")
        print(f"{'':<{width}}  {row.description}")
    return 0


def _index_list(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.rag import factory

    repository = factory.open_repository(settings)
    pointers = repository.pointers()
    ids = repository.release_ids()
    if not ids:
        print(f"No index releases under {repository.root}: run `make ingest`.")
    for release_id in ids:
        names = ",".join(name for name, target in pointers.items() if target == release_id)
        try:
            manifest = repository.open(release_id).manifest
            counts = manifest["counts"]
            summary = (
                f"{counts['documents']} docs, {counts['chunks']} chunks "
                f"({counts['new']} new), {manifest['embedder']['model_id']}"
            )
        except PlatformError as error:
            summary = f"UNREADABLE: {error}"
        print(f"{release_id}  {names:<10} {summary}")
    return 0


def _index_show(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.rag import factory

    repository = factory.open_repository(settings)
    release = repository.open(args.release) if args.release else repository.open_pointer()
    print(json.dumps(release.manifest, indent=2))
    return 0


def _index_rollback(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.rag import factory

    repository = factory.open_repository(settings)
    current = repository.open_pointer()
    target = args.to or current.manifest["predecessor"]
    if not target:
        raise UsageError(f"release {current.release_id} has no predecessor: pass --to RELEASE")
    release = repository.open(target).load()
    backend = factory.build_vector_backend(settings)
    backend.prepare(release)
    repository.move_pointer(release.release_id, expected=current.release_id)
    backend.point("current", release.release_id)
    print(f"current: {current.release_id} -> {release.release_id}")
    return 0


def _registry(settings: Any) -> Any:
    from aiplatform_dagster.mlops.registry import ModelRegistry
    from aiplatform_dagster.mlops.tracking import mlflow_target

    return ModelRegistry(mlflow_target(settings).client())


def _model_list(args: argparse.Namespace, settings: Any) -> int:
    registry = _registry(settings)
    models = registry.models(settings.mlflow.model_prefix)
    if not models:
        print("no registered models (materialise the training group to train one)")
    for name, aliases in models.items():
        shown = ", ".join(f"{alias}=v{version}" for alias, version in aliases.items())
        print(f"{name}: {shown or 'no aliases'}")
        for move in registry.moves(name)[-5:]:
            print(
                f"  {move.at} {move.alias}: {move.from_version or '-'} -> {move.to_version} "
                f"({move.kind.value} by {move.by}): {move.reason}"
            )
    return 0


def _model_promote(args: argparse.Namespace, settings: Any) -> int:
    if args.name == _embedder_name(settings):
        print(
            f"error: {args.name} is promoted together with the index release its vectors are in: "
            "materialise candidate_release and embedder_validation (the gate) instead",
            file=sys.stderr,
        )
        return 2
    moves = _registry(settings).promote(args.name, args.version, args.reason, cli_operator())
    for move in moves:
        print(f"{move.model}@{move.alias}: {move.from_version or '-'} -> {move.to_version}")
    return 0


def _model_rollback(args: argparse.Namespace, settings: Any) -> int:
    if args.name == _embedder_name(settings):
        from aiplatform_dagster.mlops.embedder_release import rollback_with_release
        from aiplatform_dagster.rag import factory

        moved = rollback_with_release(
            factory.open_repository(settings),
            factory.build_vector_backend(settings),
            _registry(settings),
            args.name,
            args.reason,
            cli_operator(),
        )
        print(f"current: {moved.replaced_release} -> {moved.release_id}")
        moves = moved.moves
    else:
        moves = _registry(settings).rollback(args.name, args.reason, cli_operator())
    for move in moves:
        print(f"{move.model}@{move.alias}: {move.from_version} -> {move.to_version}")
    return 0


def _embedder_name(settings: Any) -> str:
    from aiplatform_dagster.mlops.names import EMBEDDER
    from aiplatform_dagster.mlops.tracking import mlflow_target

    return mlflow_target(settings).model_name(EMBEDDER)


def main(argv: Sequence[str] | None = None) -> int:
    from aiplatform_dagster.config import load_settings

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, load_settings())
    except (PlatformError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
