"""``aiplatform serve`` and ``aiplatform key ...``: run the API, manage its keys."""

import argparse
from typing import Any

from aiplatform_dagster.serving.keys import Scope

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


def _serve(args: argparse.Namespace, settings: Any) -> int:
    import uvicorn

    from aiplatform_dagster.serving.app import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


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
