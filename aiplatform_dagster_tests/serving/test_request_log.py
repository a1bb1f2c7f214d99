"""The server's log as an operator reads it: `aiplatform serve` writes one line per request,
and that line names the request id the response carried, so a user's report leads to its line
(and to its trace and audit entry, which carry the same id)."""

from pathlib import Path

import httpx

from aiplatform_dagster_tests.serving.served import aiplatform_serve


def test_each_request_is_one_log_line_naming_its_request_id(storage: Path, tmp_path: Path) -> None:
    with aiplatform_serve(storage, tmp_path) as api:
        answered = httpx.post(
            f"{api.base}/v1/query",
            json={"question": "How long are vector index backups kept?"},
            headers={"Authorization": f"Bearer {api.key}", "X-Request-ID": "log-me-1"},
            timeout=60,
        )
        refused = httpx.post(
            f"{api.base}/v1/query", json={"question": "anything"}, timeout=60
        )  # no key: 401, with an id the server chose
    assert answered.status_code == 200
    assert refused.status_code == 401
    lines = api.log.read_text().splitlines()
    request_lines = [line for line in lines if "/v1/query" in line]
    assert len(request_lines) == 2, request_lines  # one each, no second access-log line
    assert "log-me-1" in request_lines[0] and "200" in request_lines[0]
    assert refused.headers["X-Request-ID"] in request_lines[1] and "401" in request_lines[1]
