"""``aiplatform serve``, ``aiplatform key ...``, ``aiplatform release ...`` and ``aiplatform
validate``: run the API, manage its keys, publish or roll back what it serves, and judge a
deployed API against a thresholds file."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aiplatform_dagster.serving.keys import Scope
from aiplatform_dagster.who import cli_operator

SCOPES = [scope.value for scope in Scope]


def add_serving_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="Run the query and agent API (uvicorn).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=_serve)

    key = commands.add_parser("key", help="API keys of the serving API (stored hashed).")
    actions = key.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="Create a key; it is printed once, never stored.")
    create.add_argument("name")
    create.add_argument(
        "--scope", action="append", choices=SCOPES, required=True, help="Repeat for each scope."
    )
    create.add_argument("--requests-per-minute", type=int, default=60)
    create.set_defaults(handler=_create_key)
    revoke = actions.add_parser("revoke", help="Remove a key by name.")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_revoke_key)

    release = commands.add_parser("release", help="Serving releases: what the API serves.")
    actions = release.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="Every flip of the live pointer, newest last.")
    listing.set_defaults(handler=_list_flips)
    show = actions.add_parser("show", help="A release's manifest (default: the live one).")
    show.add_argument("release_id", nargs="?")
    show.set_defaults(handler=_show_release)
    publish = actions.add_parser(
        "publish", help="Pin what is configured now, smoke-test it, flip if it passes."
    )
    publish.set_defaults(handler=_publish)
    rollback = actions.add_parser("rollback", help="Flip back to the release live before.")
    rollback.add_argument("--reason", default="rolled back from the CLI")
    rollback.set_defaults(handler=_rollback)

    validate = commands.add_parser(
        "validate",
        help="Judge a deployed serving API against a thresholds file: retrieval quality on the "
        "golden set, smoke queries and agent tasks, latency, errors. Exit 0: every check "
        "passed; 1: a threshold broke; 2: usage or connection error.",
        description="The API key is read from AIPLATFORM_VALIDATE_API_KEY (scopes query and "
        "agent), never from the command line.",
    )
    validate.add_argument("--endpoint", required=True, help="The API's base URL.")
    validate.add_argument(
        "--thresholds",
        type=Path,
        required=True,
        help="Thresholds YAML, e.g. k8s/validation/thresholds-staging.yaml.",
    )
    validate.add_argument(
        "--golden",
        type=Path,
        help="BEIR golden folder (queries.jsonl, qrels/test.tsv); default: the one the "
        "platform smoke-tests releases on (AIPLATFORM_SERVING_SMOKE_QUERIES or the packaged set).",
    )
    validate.add_argument("--json", dest="json_path", type=Path, help="Also write the report here.")
    validate.add_argument(
        "--repeat",
        type=_count,
        help="Repeated queries for latency (default: the thresholds "
        "file's latency_ms.extra_requests).",
    )
    validate.add_argument("--timeout", type=float, default=120.0, help="Seconds per request.")
    validate.set_defaults(handler=_validate)


def _serve(args: argparse.Namespace, settings: Any) -> int:
    import uvicorn

    from aiplatform_dagster.serving.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=_log_config(),
        access_log=False,  # the API logs each request itself, with its request id
    )
    return 0


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the platform's ``aiplatform.*`` loggers at INFO on its handler
    with a timestamp: one line per request (request id, method, path, status, duration)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["platform"] = {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    config["handlers"]["platform"] = {
        "formatter": "platform",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["aiplatform"] = {
        "handlers": ["platform"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def _create_key(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.keys import create_key, keys_path

    path = keys_path(settings)
    raw = create_key(path, args.name, [Scope(s) for s in args.scope], args.requests_per_minute)
    print(raw)
    print(f"(shown once; its hash is in {path})")
    return 0


def _revoke_key(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.keys import keys_path, revoke_key

    revoke_key(keys_path(settings), args.name)
    print(f"revoked {args.name}")
    return 0


def _list_flips(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.release import open_serving_releases

    flips = open_serving_releases(settings).flips()
    if not flips:
        print("no serving release published yet (materialise serving_release, or `aiplatform "
              "release publish`)")  # fmt: skip
    for flip in flips:
        when = f"{flip.flipped_at:%Y-%m-%d %H:%M:%S}"
        print(f"{flip.flip:>4}  {when}  {flip.kind:<8}  {flip.release}  "
              f"(was {flip.previous or '-'})  by {flip.by}: {flip.reason}")  # fmt: skip
    return 0


def _show_release(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.release import open_serving_releases

    releases = open_serving_releases(settings)
    manifest = releases.open(args.release_id) if args.release_id else releases.live_manifest()
    print(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return 0


def _publish(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.publish import publish_serving_release

    publication = publish_serving_release(settings, cli_operator(), print)
    print(publication.decision)
    for failure in publication.report.failures if publication.report else []:
        print(f"  {failure}")
    return 0 if publication.report is None or publication.report.passed else 1


def _rollback(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.serving.release import open_serving_releases

    flip = open_serving_releases(settings).rollback(cli_operator(), args.reason)
    print(f"live: {flip.release} (was {flip.previous}); the API follows within "
          f"{settings.serving.refresh_s:g} s")  # fmt: skip
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _validate(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.evaluation.runner import judged_questions_dir
    from aiplatform_dagster.serving.validation import run_validation

    report = run_validation(
        args.endpoint,
        args.thresholds,
        args.golden or judged_questions_dir(settings),
        repeat=args.repeat,
        timeout_s=args.timeout,
    )
    print(report.table())
    if args.json_path:
        report.write_json(args.json_path)
        print(f"report written to {args.json_path}", file=sys.stderr)
    return 0 if report.passed else 1
