"""The OpenAI chat client, through the real openai package against a local fake server."""

import logging
import time

import pytest

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.llm import LLMError, LLMSettings
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.citations import resolve_citations
from aiplatform_dagster.rag.query.context import Context, build_context
from aiplatform_dagster.rag.query.prompts import build_messages
from aiplatform_dagster.rag.query.retriever import RetrievedChunk
from aiplatform_dagster_tests.fake_openai import (
    FakeOpenAIServer,
    closed_port_url,
    silent_endpoint,
)

QUESTION = "When does a page escalate?"


def paging_context() -> Context:
    text = "If nobody acknowledges within 15 minutes the page escalates to the secondary."
    chunk = Chunk("c1", "paging.md", "Paging policy", "/docs/paging.md", 0, 0, len(text), 12, text)
    return build_context([RetrievedChunk(chunk, 0.9)], 1000, lambda b: [len(t.split()) for t in b])


def settings_for(server: FakeOpenAIServer, **overrides) -> LLMSettings:
    fast = {"timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01, "model": "test-model"}
    return LLMSettings(base_url=server.base_url, api_key="sk-test", **(fast | overrides))


def test_an_answer_comes_back_with_its_token_usage() -> None:
    with FakeOpenAIServer(chat_reply=lambda _: "It escalates after 15 minutes [1].") as server:
        messages = build_messages(QUESTION, paging_context())
        completion = settings_for(server).build_client().complete(messages)

    assert completion.text == "It escalates after 15 minutes [1]."
    assert completion.model == "test-model"
    prompt_words = sum(len(m["content"].split()) for m in messages)
    assert (completion.prompt_tokens, completion.completion_tokens) == (prompt_words, 6)
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["messages"] == messages
    assert request.body["temperature"] == 0 and request.body["model"] == "test-model"


def test_a_citation_of_a_source_not_in_the_context_is_dropped_and_flagged() -> None:
    context = paging_context()
    reply = "It escalates after 15 minutes [1]. It also pages the CTO [4]."
    with FakeOpenAIServer(chat_reply=lambda _: reply) as server:
        completion = settings_for(server).build_client().complete(build_messages(QUESTION, context))

    answer = resolve_citations(completion.text, context)
    assert answer.text == "It escalates after 15 minutes [1]. It also pages the CTO."
    assert [c.doc_id for c in answer.citations] == ["paging.md"]
    assert answer.invalid_citations == [4] and answer.flagged


def test_timeouts_are_retried_with_backoff_then_reported_clearly() -> None:
    with FakeOpenAIServer() as server:
        server.time_out_next(10)
        client = settings_for(server, max_retries=2).build_client()
        with pytest.raises(LLMError) as raised:
            client.complete(build_messages(QUESTION, paging_context()))

    assert len(server.chat_requests()) == 3  # the first try and two retries
    message = str(raised.value)
    assert server.base_url in message and "timed out after 3 attempts" in message
    assert "AIPLATFORM_LLM_TIMEOUT_S" in message and "AIPLATFORM_LLM_MAX_RETRIES" in message


def test_an_endpoint_that_never_answers_fails_within_its_timeouts_naming_the_variables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with silent_endpoint() as url, caplog.at_level(logging.WARNING):
        client = LLMSettings(
            base_url=url, api_key="sk-test", timeout_s=0.5, max_retries=1, backoff_s=0.01
        ).build_client()
        started = time.monotonic()
        with pytest.raises(PlatformError) as raised:
            client.complete([{"role": "user", "content": "hi"}])
        elapsed = time.monotonic() - started

    # Two attempts of 0.5 s and one backoff; the margin covers a loaded machine, not a hang.
    assert elapsed < 2 * 0.5 + 0.01 + 10
    assert isinstance(raised.value, LLMError)
    message = str(raised.value)
    assert url in message and "timed out after 2 attempts (0.5 s each" in message
    assert "AIPLATFORM_LLM_TIMEOUT_S" in message and "AIPLATFORM_LLM_MAX_RETRIES" in message
    [retry] = [r.getMessage() for r in caplog.records if r.name.endswith("models.llm")]
    assert url in retry and "attempt 1 of 2" in retry  # the wait is not silent


def test_by_default_a_silent_endpoint_is_given_up_on_within_two_minutes() -> None:
    settings = LLMSettings()
    attempts = settings.max_retries + 1
    backoff = sum(settings.backoff_s * 2**n for n in range(settings.max_retries))
    assert settings.timeout_s == 30
    assert attempts * settings.timeout_s + backoff <= 120


def test_a_server_error_then_success_returns_the_answer() -> None:
    with FakeOpenAIServer() as server:
        server.fail_next(1, status=500)
        completion = (
            settings_for(server).build_client().complete(build_messages(QUESTION, paging_context()))
        )

    assert completion.text.endswith("[1]")
    assert len(server.chat_requests()) == 2


def test_rate_limits_are_retried_but_a_bad_key_is_not() -> None:
    with FakeOpenAIServer() as server:
        server.fail_next(2, status=429)
        client = settings_for(server).build_client()
        assert client.complete([{"role": "user", "content": "hi"}]).text
        assert len(server.chat_requests()) == 3

        server.fail_next(1, status=401)
        with pytest.raises(LLMError, match=r"HTTP 401.*OPENAI_API_KEY"):
            client.complete([{"role": "user", "content": "hi"}])
        assert len(server.chat_requests()) == 4


def test_an_unreachable_endpoint_names_the_url_and_the_setting_to_check() -> None:
    url = closed_port_url()
    settings = LLMSettings(
        base_url=url, api_key="sk-test", timeout_s=0.5, max_retries=1, backoff_s=0.01
    )
    with pytest.raises(LLMError, match="could not be reached after 2 attempts") as raised:
        settings.build_client().complete([{"role": "user", "content": "hi"}])
    assert url in str(raised.value) and "AIPLATFORM_LLM_BASE_URL" in str(raised.value)
    assert "refused" in str(raised.value)


def test_azure_openai_calls_the_deployment_with_the_api_version() -> None:
    with FakeOpenAIServer() as server:
        settings = LLMSettings(
            azure_endpoint=server.url,
            api_version="2024-06-01",
            api_key="azure-key",
            model="gpt4o-prod",
        )
        completion = settings.build_client().complete([{"role": "user", "content": "hi"}])

    assert completion.text == "Answer to: hi [1]"
    [request] = server.requests
    assert request.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert request.headers["api-key"] == "azure-key"


def test_nothing_configured_says_how_to_configure_it() -> None:
    with pytest.raises(LLMError, match="No LLM is configured"):
        LLMSettings().build_client()


def test_azure_without_an_api_version_says_what_is_missing() -> None:
    settings = LLMSettings(azure_endpoint="https://example.openai.azure.com", api_key="az")
    with pytest.raises(LLMError, match="OPENAI_API_VERSION is not"):
        settings.build_client()
