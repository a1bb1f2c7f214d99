"""llm_call through the real openai client against the local fake OpenAI server."""

from aiplatform_dagster.agents.tools.base import ToolContext, ToolRegistry, ToolRunner, ToolStatus
from aiplatform_dagster.agents.tools.llm_call import llm_call_tool
from aiplatform_dagster.config import load_settings
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

CONTEXT = ToolContext("thread-1", "web_reader", "step-2:0")


def runner_for(base_url: str | None) -> ToolRunner:
    environ = {"AIPLATFORM_LLM_MODEL": "test-model", "AIPLATFORM_LLM_TIMEOUT_S": "5"}
    if base_url:
        environ |= {"AIPLATFORM_LLM_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test"}
    return ToolRunner(ToolRegistry([llm_call_tool(load_settings(environ))]))


def test_the_answer_comes_back_with_its_token_usage() -> None:
    with FakeOpenAIServer(chat_reply=lambda _: "Four, plainly.") as server:
        outcome = runner_for(server.base_url).call(
            "llm_call", {"prompt": "What is two plus two?", "system": "Be brief."}, CONTEXT
        )

    assert outcome.status is ToolStatus.OK and outcome.content == "Four, plainly."
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (7, 2)
    assert outcome.model == "test-model" and outcome.attempts == 1
    assert outcome.data == {"text": "Four, plainly.", "model": "test-model"}
    [request] = server.chat_requests()
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus two?"},
    ]


def test_without_a_system_message_only_the_prompt_is_sent() -> None:
    with FakeOpenAIServer(chat_reply=lambda _: "ok") as server:
        runner = runner_for(server.base_url)
        runner.call("llm_call", {"prompt": "Summarise this."}, CONTEXT)
        runner.call("llm_call", '{"prompt": "And this.", "system": null}', CONTEXT)

    assert [r.body["messages"] for r in server.chat_requests()] == [
        [{"role": "user", "content": "Summarise this."}],
        [{"role": "user", "content": "And this."}],
    ]


def test_a_refused_request_fails_once_with_the_endpoints_explanation() -> None:
    with FakeOpenAIServer() as server:
        server.fail_next(1, status=401)
        outcome = runner_for(server.base_url).call("llm_call", {"prompt": "hi"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED and outcome.attempts == 1
    assert "HTTP 401" in outcome.content and "check OPENAI_API_KEY" in outcome.content
    assert len(server.chat_requests()) == 1


def test_without_a_configured_model_the_tool_says_what_to_set() -> None:
    outcome = runner_for(None).call("llm_call", {"prompt": "hi"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED
    assert "llm_call cannot reach a model: No LLM is configured" in outcome.content
    assert "AIPLATFORM_LLM_BASE_URL" in outcome.content
