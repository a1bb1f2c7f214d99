"""The ``aiplatform`` command: query the materialised indexes from a terminal."""

import argparse
import json
import sys
from collections.abc import Sequence

from aiplatform_dagster.rag.retriever import Retriever, SearchMode

SNIPPET_CHARS = 240


def _platform_retriever() -> Retriever:
    """The retriever over the platform's materialised indexes (Dagster imported only here)."""
    from aiplatform_dagster.defs.resources import default_resources

    resources = default_resources()
    store = resources["storage"].ingestion_store()
    return Retriever.from_store(
        store, resources["embedder"].get_embedder(), resources["vector_store"].get_store()
    )


def _search(args: argparse.Namespace) -> int:
    results = _platform_retriever().search(args.query, SearchMode(args.mode), args.k)
    if args.json:
        print(
            json.dumps(
                [
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
            )
        )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiplatform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="Rank chunks for a query.")
    search.add_argument("query")
    search.add_argument("--mode", choices=[m.value for m in SearchMode], default="hybrid")
    search.add_argument("-k", type=int, default=5, help="How many chunks to show.")
    search.add_argument("--json", action="store_true", help="Print results as JSON.")
    search.set_defaults(handler=_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
