"""Chat completions from any OpenAI-protocol endpoint: OpenAI, Azure OpenAI, vLLM, Ollama.

The openai client's own retries are switched off: ``call_with_retries`` (shared with the
embeddings client) bounds each attempt by a timeout, retries timeouts, connection errors, 429s
and 5xx a configured number of times with exponential backoff, logs each retry, and ends every
failure in one error that says which endpoint failed, what happened and which setting fixes it.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiplatform_dagster.errors import PlatformError

DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
MAX_BACKOFF_S = 30.0

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LLMError(PlatformError, RuntimeError):
    """The LLM endpoint could not produce an answer; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str


class ChatClient(Protocol):
    """Anything that turns chat messages into a completion (the OpenAI client, a test double)."""

    def complete(self, messages: Sequence[Mapping[str, str]]) -> Completion: ...


def api_key_variable(azure: bool) -> str:
    """The environment variable holding the key: Azure OpenAI and OpenAI name it differently."""
    return "AZURE_OPENAI_API_KEY" if azure else "OPENAI_API_KEY"


@dataclass(frozen=True)
class LLMSettings:
    """Where the LLM lives and how to call it. ``model`` is the deployment name on Azure."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = None
    azure_endpoint: str | None = None
    api_version: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_s: float = 30.0
    max_retries: int = 2
    backoff_s: float = 1.0

    @property
    def is_configured(self) -> bool:
        """True when an endpoint or key is set; otherwise callers fall back to extractive."""
        return bool(self.azure_endpoint or self.base_url or self.api_key)

    @property
    def endpoint(self) -> str:
        """The URL requests go to, for error messages and run metadata."""
        if self.azure_endpoint:
            return f"{self.azure_endpoint} (Azure deployment {self.model!r})"
        return self.base_url or OPENAI_URL

    def build_client(self) -> "OpenAIChatClient":
        return OpenAIChatClient(self)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the JSON text it wrote, unparsed,
    because a model can write invalid JSON and the tool's schema check must see that."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One assistant turn of a tool-using conversation: text, tool calls, or both."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int
    model: str

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation before the tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


class OpenAIChatClient:
    """``ChatClient`` over the openai package, with retries and actionable errors."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self._client = _openai_client(settings)

    def complete(self, messages: Sequence[Mapping[str, str]]) -> Completion:
        """One chat completion, retried on transient failures with exponential backoff."""
        turn = self.chat(messages)
        if turn.text is None:
            raise LLMError(
                f"LLM endpoint {self.settings.endpoint} returned no text; the answer may have "
                "been filtered or refused"
            )
        return Completion(turn.text, turn.prompt_tokens, turn.completion_tokens, turn.model)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        max_tokens: int | None = None,
    ) -> ChatTurn:
        """One assistant turn; with ``tools`` (OpenAI function schemas) the model may answer
        with tool calls instead of text. Retried like ``complete``."""
        from openai.types.chat import ChatCompletion

        settings = self.settings
        body: dict[str, Any] = {
            "model": settings.model,
            "messages": [dict(message) for message in messages],
            "temperature": settings.temperature,
            "max_tokens": max_tokens or settings.max_tokens,
        }
        if tools:
            body["tools"] = [dict(tool) for tool in tools]
        # The client's low-level post: ``chat.completions.create`` first walks every message
        # through its typed-dict transform, a third of the interpreter time a served query spent
        # in the client. Plain JSON messages need none; retries, auth and Azure's deployment
        # routing are the client's, as with ``create``.
        response = call_with_retries(
            lambda: self._client.post("/chat/completions", body=body, cast_to=ChatCompletion),
            RetryPolicy(settings.timeout_s, settings.max_retries, settings.backoff_s),
            f"LLM endpoint {settings.endpoint} (model {settings.model!r})",
            LLM_VARIABLES[bool(settings.azure_endpoint)],
            LLMError,
        )
        return self._turn(response)

    def _turn(self, response: Any) -> ChatTurn:
        choice = response.choices[0] if response.choices else None
        if choice is None or (choice.message.content is None and not choice.message.tool_calls):
            reason = choice.finish_reason if choice else "no choices"
            raise LLMError(
                f"LLM endpoint {self.settings.endpoint} returned no text "
                f"(finish_reason={reason}); the answer may have been filtered or refused"
            )
        usage = response.usage
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments or "{}")
            for call in choice.message.tool_calls or ()
        )
        return ChatTurn(
            text=choice.message.content,
            tool_calls=calls,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=response.model or self.settings.model,
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one request may take, and how often and how patiently a transient failure is
    retried: a silent server costs at most attempts x timeout plus the backoff."""

    timeout_s: float
    max_retries: int
    backoff_s: float

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), doubling up to a cap."""
        return min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


@dataclass(frozen=True, slots=True)
class EndpointVariables:
    """The settings a user changes to fix one endpoint, named in its error messages."""

    base_url: str
    api_key: str
    model: str
    timeout: str
    max_retries: str | None = None


LLM_VARIABLES = {
    azure: EndpointVariables(
        base_url="AZURE_OPENAI_ENDPOINT" if azure else "AIPLATFORM_LLM_BASE_URL",
        api_key=api_key_variable(azure),
        model="AIPLATFORM_LLM_MODEL (the deployment name on Azure)",
        timeout="AIPLATFORM_LLM_TIMEOUT_S",
        max_retries="AIPLATFORM_LLM_MAX_RETRIES",
    )
    for azure in (False, True)
}


def call_with_retries(
    request: Callable[[], T],
    policy: RetryPolicy,
    where: str,
    variables: EndpointVariables,
    error_type: Callable[[str], PlatformError],
) -> T:
    """``request()``, retried on timeouts, connection errors, 429s and 5xx; any other failure,
    or the last retry's, raises ``error_type`` with what happened at ``where`` and the fix.

    Each retry is logged, so a slow endpoint is never a silent wait.
    """
    import openai

    started = time.monotonic()
    attempts = policy.max_retries + 1
    attempt = 1
    while True:
        try:
            return request()
        except openai.APIError as error:
            if not _is_transient(error) or attempt == attempts:
                elapsed = time.monotonic() - started
                raise error_type(
                    describe_failure(error, where, attempt, policy, elapsed, variables)
                ) from error
            delay = policy.delay_s(attempt)
            logger.warning(
                "%s: %s on attempt %d of %d; retrying in %g s",
                where, _what_happened(error, policy), attempt, attempts, delay,
            )  # fmt: skip
            time.sleep(delay)
            attempt += 1


def describe_failure(
    error: Exception,
    where: str,
    attempts: int,
    policy: RetryPolicy,
    elapsed_s: float,
    variables: EndpointVariables,
) -> str:
    """What happened at which endpoint, after how many attempts, and the likeliest fix."""
    import openai

    tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(error, openai.APITimeoutError):
        retries = f" or {variables.max_retries}" if variables.max_retries else ""
        return (
            f"{where} timed out {tries} ({policy.timeout_s:g} s each, {elapsed_s:.1f} s in all): "
            f"check the server is up and not overloaded, or raise {variables.timeout}{retries}"
        )
    if isinstance(error, openai.APIConnectionError):
        return (
            f"{where} could not be reached {tries} ({_what_happened(error, policy)}): check "
            f"{variables.base_url} and that the server is running"
        )
    status = getattr(error, "status_code", None)
    fixes = {
        401: f"check {variables.api_key}",
        403: "the key is not allowed to use this model or deployment",
        404: f"check {variables.model} and {variables.base_url} (an OpenAI-compatible base URL "
        "ends in /v1)",
        429: "rate limited or out of quota: lower the request rate or raise the quota",
    }
    fix = fixes.get(status) or (
        "the server failed: retry later or check its logs"
        if status and status >= 500
        else "check the request settings"
    )
    return f"{where} failed {tries} with HTTP {status}: {error}. Fix: {fix}"


def _what_happened(error: Exception, policy: RetryPolicy) -> str:
    """A few words for the log: "timed out after 30 s", "[Errno 111] Connection refused"."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return f"timed out after {policy.timeout_s:g} s"
    if isinstance(error, openai.APIConnectionError):
        return str(error.__cause__ or error)
    return f"HTTP {getattr(error, 'status_code', None)}"


def _is_transient(error: Exception) -> bool:
    """Worth retrying: the request may succeed unchanged a little later."""
    import openai

    if isinstance(error, openai.APIConnectionError):
        return True
    status = getattr(error, "status_code", None)
    return status is not None and (status == 429 or status >= 500)


def _openai_client(settings: LLMSettings) -> Any:
    """The openai (or Azure) client, its own retries off since ``complete`` retries."""
    import openai

    if settings.azure_endpoint:
        missing = [
            variable
            for variable, value in (
                ("OPENAI_API_VERSION", settings.api_version),
                ("AZURE_OPENAI_API_KEY", settings.api_key),
            )
            if not value
        ]
        if missing:
            raise LLMError(
                f"Azure OpenAI endpoint {settings.azure_endpoint} is set but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: set "
                "them, or unset AZURE_OPENAI_ENDPOINT to use an OpenAI-compatible endpoint"
            )
        return openai.AzureOpenAI(
            azure_endpoint=settings.azure_endpoint,
            azure_deployment=settings.model,
            api_version=settings.api_version,
            api_key=settings.api_key,
            timeout=settings.timeout_s,
            max_retries=0,
        )
    if not settings.is_configured:
        raise LLMError(
            "No LLM is configured: set OPENAI_API_KEY, AIPLATFORM_LLM_BASE_URL (an "
            "OpenAI-compatible server) or AZURE_OPENAI_ENDPOINT"
        )
    return openai.OpenAI(
        base_url=settings.base_url or OPENAI_URL,
        # Local OpenAI-compatible servers (vLLM, Ollama) accept any key but the client wants one.
        api_key=settings.api_key or "unused",
        timeout=settings.timeout_s,
        max_retries=0,
    )
