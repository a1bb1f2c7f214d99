"""The audit log as a compliance reviewer reads it: who asked what, when, what was answered;
append-only in PostgreSQL (this machine's server, a database each test creates and drops);
text hashed by default; and a PostgreSQL outage that buffers entries instead of failing
queries, said in /readyz and /metrics, and written once the server is back."""

import hashlib
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.audit import TextPolicy, protect
from aiplatform_dagster.serving.keys import Scope, create_key, keys_path
from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN, temporary_database

QUESTION = "How long are vector index backups kept?"


def settings_for(storage: Path, **extra: str) -> Settings:
    """Settings over ``storage``, with an `auditor` key created before the API starts."""
    create_key(storage / "serving" / "api_keys.yaml", "auditor", [Scope.QUERY])
    return load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            "AIPLATFORM_AGENTS_REGISTRY": "",
            **extra,
        }
    )


def ask(settings: Settings, client: TestClient, question: str = QUESTION) -> dict:
    """Ask as a second key of `auditor`'s (created while the API runs: picked up by refresh)."""
    key = create_key(keys_path(settings), "auditor-2", [Scope.QUERY])
    client.app.state.service.refresh()
    response = client.post(
        "/v1/query", json={"question": question}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return {**response.json(), "key": key}


def test_by_default_the_log_is_json_lines_with_the_text_hashed(storage: Path) -> None:
    settings = settings_for(storage)
    with TestClient(create_app(settings)) as client:
        answer = ask(settings, client)
    files = list((storage / "serving" / "audit").glob("*.jsonl"))
    assert len(files) == 1
    text = files[0].read_text()
    entry = json.loads(text.splitlines()[-1])
    assert entry["caller"] == "auditor-2" and entry["endpoint"] == "/v1/query"
    assert entry["request_id"] == answer["request_id"]
    assert entry["release_id"] == answer["release_id"]
    assert entry["question"] == "sha256:" + hashlib.sha256(QUESTION.encode()).hexdigest()
    assert entry["answer"].startswith("sha256:") and answer["text"] not in text
    assert entry["citations"] == [c["doc_id"] for c in answer["citations"]]
    assert QUESTION not in text and answer["key"] not in text


def test_redacted_keeps_only_the_length() -> None:
    assert protect("secret plans", TextPolicy.REDACTED) == "[redacted: 12 characters]"
    assert protect("secret plans", TextPolicy.PLAIN) == "secret plans"


def test_in_postgresql_the_log_is_append_only(storage: Path) -> None:
    with temporary_database("audit") as url:
        settings = settings_for(
            storage, AIPLATFORM_SERVING_AUDIT_DSN=url, AIPLATFORM_SERVING_AUDIT_TEXT="plain"
        )
        with TestClient(create_app(settings)) as client:
            answer = ask(settings, client)
        with psycopg.connect(url, autocommit=True) as db:
            rows = db.execute(
                "SELECT caller, question, answer, release_id FROM audit_log"
            ).fetchall()
            assert rows == [("auditor-2", QUESTION, answer["text"], answer["release_id"])]
            for tampering in (
                "UPDATE audit_log SET answer = 'nothing to see'",
                "DELETE FROM audit_log",
                "TRUNCATE audit_log",
            ):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    db.execute(tampering)
            assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


def test_postgresql_down_buffers_entries_and_says_so_then_writes_them(storage: Path) -> None:
    """The database the DSN names does not exist yet (the server refuses every connection to
    it); queries still answer. Once it exists, the buffered entry is written."""
    name = f"audit_late_{uuid.uuid4().hex[:10]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    settings = settings_for(storage, AIPLATFORM_SERVING_AUDIT_DSN=url)
    admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True)
    try:
        with TestClient(create_app(settings)) as client:
            ask(settings, client)
            service = client.app.state.service
            service.audit.flush()
            ready = client.get("/readyz").json()
            assert ready["ready"] is True
            assert ready["audit"].startswith("1 entries buffered, 0 dropped: cannot write")
            assert f'database "{name}" does not exist' in ready["audit"]
            assert "aiplatform_audit_buffered 1.0" in client.get("/metrics").text

            admin.execute(f"CREATE DATABASE {name}")
            service.audit.flush()
            assert client.get("/readyz").json()["audit"] == "ok"
        with psycopg.connect(url) as db:
            assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
