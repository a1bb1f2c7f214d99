"""`dagster dev` started as a user starts it, on loopback, and stopped with all it spawned."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = TypeVar("T")
MAKE_DEV = {"AIPLATFORM_EXECUTION_EXECUTOR": "in_process"}
"""What the Makefile's `dev` and `ingest` targets set beside the folders."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], seconds: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.5)
    return result


def instance_home(folder: Path) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml, as `make dev` prepares one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    return folder


@contextmanager
def dagster_dev(
    target: Sequence[str],
    env: Mapping[str, str],
    cwd: Path = PROJECT_ROOT,
    output: IO[bytes] | None = None,
) -> Iterator[int]:
    """Run ``dagster dev TARGET`` (webserver and daemon) on a free loopback port; yield it.

    ``output`` receives the webserver's and daemon's log (discarded when None).
    """
    port = free_port()
    server = subprocess.Popen(
        [BIN / "dagster", "dev", *target, "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd, env=dict(env), stdout=output or subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,  # dagster dev ignores SIGTERM to its parent alone
    )  # fmt: skip
    try:
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
