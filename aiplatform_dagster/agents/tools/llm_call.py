"""``llm_call``: one plain completion from the platform's LLM, as a tool.

For a sub-task an agent hands to the model without tools (summarise a fetched page, rewrite a
draft). The usage is reported in the outcome, so the workflow charges its tokens to the
budget like any other model call. The client retries transient failures itself (see
models/llm.py), so the runner does not retry on top of it.
"""

import threading
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolError,
    ToolOutcome,
    ToolSpec,
    ToolStatus,
)
from aiplatform_dagster.config import Settings

if TYPE_CHECKING:
    from aiplatform_dagster.models.llm import ChatClient

NAME = "llm_call"
PERMISSION = "llm:call"
MAX_PROMPT_CHARS = 50_000


class LlmCallInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, description="The user message to complete."
    )
    system: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="An optional system message."
    )


def llm_call_tool(settings: Settings, llm: "ChatClient | None" = None) -> ToolSpec:
    """The tool over ``llm``, or the configured LLM's client built on the first call."""
    from aiplatform_dagster.rag.factory import llm_settings

    config = llm_settings(settings)
    lock = threading.Lock()
    clients: list[ChatClient] = [llm] if llm is not None else []

    def client() -> "ChatClient":
        from aiplatform_dagster.models.llm import LLMError

        with lock:
            if not clients:
                try:
                    clients.append(config.build_client())
                except LLMError as error:
                    raise ToolError(f"llm_call cannot reach a model: {error}") from None
            return clients[0]

    def run(arguments: LlmCallInput, context: ToolContext) -> ToolOutcome:
        from aiplatform_dagster.models.llm import LLMError

        messages = [{"role": "user", "content": arguments.prompt}]
        if arguments.system:
            messages.insert(0, {"role": "system", "content": arguments.system})
        try:
            completion = client().complete(messages)
        except LLMError as error:
            raise ToolError(str(error)) from None
        return ToolOutcome(
            NAME,
            ToolStatus.OK,
            completion.text,
            data={"text": completion.text, "model": completion.model},
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            model=completion.model,
        )

    # Every attempt the client makes may take its timeout, and it waits between attempts.
    attempts = config.max_retries + 1
    budget_s = config.timeout_s * attempts + config.backoff_s * (2**config.max_retries - 1)
    return ToolSpec(
        name=NAME,
        description="Ask the platform's language model one question (a prompt and an "
        "optional system message) and get its text answer; it sees nothing but the prompt.",
        permission=PERMISSION,
        input_model=LlmCallInput,
        run=run,
        timeout_s=budget_s + 1.0,
        max_retries=0,
    )
