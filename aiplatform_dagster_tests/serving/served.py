"""`aiplatform serve` started as a user starts it: a key from the CLI, uvicorn on a free
loopback port, its output in a log file, stopped with SIGTERM (a graceful shutdown)."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aiplatform_dagster_tests.dagster_dev import BIN, free_port, wait_until

READY_S = 120


@dataclass(frozen=True)
class ServedApi:
    base: str
    key: str
    """A raw key with the query scope, created with `aiplatform key create`."""
    log: Path
    """The server's stdout and stderr (complete once the block has ended)."""


def responds(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def aiplatform_serve(storage: Path, scratch: Path, **environ: str) -> Iterator[ServedApi]:
    """Serve ``storage`` until the block ends; ``environ`` adds to the environment."""
    env = {
        **os.environ,
        "AIPLATFORM_STORAGE_DIR": str(storage),
        "AIPLATFORM_SERVING_API_KEYS_FILE": str(scratch / "keys.yaml"),
        "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **environ,
    }
    created = subprocess.run(
        [BIN / "aiplatform", "key", "create", "tester", "--scope", "query"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = scratch / "api.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [BIN / "aiplatform", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: responds(f"{base}/readyz"), READY_S, "the API serving /readyz")
            yield ServedApi(base, created.stdout.splitlines()[0], log)
        finally:
            server.terminate()  # SIGTERM: uvicorn shuts down, the app's lifespan ends
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
