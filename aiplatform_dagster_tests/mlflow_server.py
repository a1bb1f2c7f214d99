"""A real MLflow tracking server for the tests: `mlflow server` on loopback, its backend store
in a PostgreSQL database created for the test session and dropped afterwards, artifacts in a
temporary folder."""

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform_dagster_tests.dagster_dev import BIN, free_port, wait_until
from aiplatform_dagster_tests.postgres import temporary_database


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tracking URI of a running server (http://127.0.0.1:PORT)."""
    with temporary_database("mlflow_test") as url:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; this machine has psycopg2.
        backend_store = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        yield from _serve(backend_store, tmp_path_factory.mktemp("mlflow"))


def _serve(backend_store: str, folder: Path) -> Iterator[str]:
    """Run ``mlflow server`` on ``backend_store`` until the generator is closed."""
    port = free_port()
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [
            BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", backend_store,
            "--default-artifact-root", (folder / "artifacts").as_uri(),
            "--no-serve-artifacts", "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url, server, folder), 180, "the MLflow server answering")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _healthy(url: str, server: subprocess.Popen, folder: Path) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"mlflow server exited: {(folder / 'server.log').read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
