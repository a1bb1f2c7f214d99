"""A hot swap under load, as production meets it: clients keep asking over real HTTP (uvicorn
on loopback) while a new serving release is published and then rolled back; no request fails
or is dropped, and each answer names the release that produced it."""

import threading
import time
from pathlib import Path

import httpx

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.release import open_serving_releases
from aiplatform_dagster.serving.server import serving_in_thread
from aiplatform_dagster_tests.dagster_dev import wait_until
from aiplatform_dagster_tests.serving.test_release import reingest

CLIENTS = 4
QUESTION = {"question": "How long are vector index backups kept?", "use_cache": False}


def test_publishing_and_rolling_back_under_load_loses_no_request(storage: Path, embedder) -> None:
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            "AIPLATFORM_AGENTS_REGISTRY": "",
            "AIPLATFORM_SERVING_REFRESH_S": "0.2",
        }
    )
    key = create_key(storage / "serving" / "api_keys.yaml", "load", [Scope.QUERY], 100_000)
    first = open_serving_releases(settings).live().release
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(base: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                response = http.post(
                    "/v1/query",
                    json={
                        "question": "How long are vector index backups kept?",
                        "use_cache": False,
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                release = response.json().get("release_id", "") if response.is_success else ""
                with lock:
                    results.append((response.status_code, release or response.text))

    def served(release: str) -> bool:
        with lock:
            return any(seen == release for _, seen in results[-CLIENTS:])

    with serving_in_thread(create_app(settings)) as base:
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: served(first), 60, "answers from the first release")
            reingest(settings, embedder)
            second = publish_serving_release(settings, "test").manifest.release_id
            wait_until(lambda: served(second), 60, "answers from the published release")
            open_serving_releases(settings).rollback("test", "under load")
            wait_until(lambda: served(first), 60, "answers after the rollback")
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

    failures = [result for result in results if result[0] != 200]
    assert failures == []
    assert {release for _, release in results} == {first, second}
    assert len(results) > 3 * CLIENTS
