"""Schemathesis against the API's own OpenAPI schema: generated requests (valid and invalid
bodies, odd strings, unknown fields, huge numbers) to every operation, with a key that may do
everything; no input may make the API answer with a server error. The model behind the agent
endpoints is the local OpenAI-protocol server (no real model runs here)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from aiplatform_dagster.agents.checkpoints import migrate
from aiplatform_dagster.config import load_settings
from aiplatform_dagster.serving.app import create_app
from aiplatform_dagster.serving.keys import Scope, create_key
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

KEY_FILE = "fuzz_keys.yaml"
AUTH: dict[str, str] = {}
"""The key the fixture created, sent with every generated request."""


@pytest.fixture
def api_schema(storage: Path, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    """The running app (lifespan entered) and its schema; a key with every scope in AUTH."""
    key = create_key(tmp_path / KEY_FILE, "fuzz", list(Scope), 1_000_000)
    with FakeOpenAIServer() as llm:
        environ = {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_SERVING_API_KEYS_FILE": str(tmp_path / KEY_FILE),
            "AIPLATFORM_AGENTS_TRACE_DIR": str(tmp_path / "traces"),
            "AIPLATFORM_AGENTS_REGISTRY": "",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            "AIPLATFORM_LLM_BASE_URL": llm.base_url,
            "AIPLATFORM_LLM_MAX_RETRIES": "0",
        }
        migrate(load_settings(environ))
        app = create_app(load_settings(environ))
        with TestClient(app):  # runs the lifespan: the live engine and the agents are loaded
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            AUTH["Authorization"] = f"Bearer {key}"
            yield schema


def test_no_generated_request_makes_the_api_fail(api_schema: schemathesis.BaseSchema) -> None:
    """Each operation in turn, with valid and with invalid requests (schemathesis's pytest
    loader does not run on pytest 9, so cases are drawn from its Hypothesis strategies)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {
        "/v1/query", "/v1/agent", "/v1/agent/{thread_id}", "/v1/agent/{thread_id}/resume",
        "/v1/feedback", "/readyz", "/metrics",
    }  # fmt: skip
    seen: dict[str, set[int]] = {}
    for operation in operations:
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
            def no_server_error(case: schemathesis.Case) -> None:
                response = case.call(headers=AUTH)
                case.validate_response(response, checks=[not_a_server_error])
                seen.setdefault(case.operation.path, set()).add(response.status_code)

            try:
                no_server_error()
            except Unsatisfiable:  # an operation with no input has no invalid request
                assert mode is GenerationMode.NEGATIVE, operation.path
    assert 200 in seen["/v1/query"] and 422 in seen["/v1/query"]  # answered, and refused
    assert 422 in seen["/v1/feedback"]
