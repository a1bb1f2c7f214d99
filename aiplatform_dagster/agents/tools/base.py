"""The tool registry and the runner every agent tool call goes through.

A call is validated against the tool's typed input before anything runs, so a model that
writes bad arguments reads which field is wrong and what it must be. The runner then guards
the call the same way for every tool: a circuit breaker that fails fast while a tool keeps
failing, a timeout, retries with exponential backoff on transient errors, and a fallback tool.
Tool failures come back as a ``ToolOutcome`` the model reads; the runner raises only for
programming errors (an unknown tool name: governance refuses those before the runner).

Permissions are not checked here: governance checks that an agent may call a tool first.
Side-effecting tools store their result under ``ToolContext.idempotency_key``, so a node
resumed after a crash, or a retry after a timeout, never repeats the effect.
"""

import contextvars
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.llm import RetryPolicy

if TYPE_CHECKING:
    from aiplatform_dagster.agents.memory import SharedMemory


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: the thread, the agent and the call's stable id."""

    thread_id: str
    agent: str
    call_id: str
    """Stable across a resume (thread, step, index): the same call always has the same id."""
    memory: "SharedMemory | None" = None

    @property
    def idempotency_key(self) -> str:
        """The key a side-effecting tool stores its result under: same call, same key."""
        digest = hashlib.sha256(f"{self.thread_id}\x00{self.call_id}".encode())
        return digest.hexdigest()[:32]


class ToolStatus(StrEnum):
    OK = "ok"
    REFUSED = "refused"
    INVALID_INPUT = "invalid_input"
    FAILED = "failed"
    CIRCUIT_OPEN = "circuit_open"
    TIMEOUT = "timeout"


FALLBACK_STATUSES = frozenset({ToolStatus.FAILED, ToolStatus.TIMEOUT, ToolStatus.CIRCUIT_OPEN})
"""Outcomes another tool may answer instead; a refusal or bad input would fail there too."""


@dataclass(frozen=True)
class ToolOutcome:
    """What one tool call came to; ``content`` is what the model reads."""

    tool: str
    """The tool asked for (a fallback's answer still names the tool asked for)."""
    status: ToolStatus
    content: str
    """The result as text, or what went wrong and how to fix it."""
    data: Any = None
    """The structured result, JSON-able."""
    sources: tuple[dict, ...] = ()
    """Knowledge-base passages: chunk_id, doc_id, title, source, text, score."""
    attempts: int = 0
    fallback_used: str | None = None
    duration_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    replayed: bool = False
    """A side-effecting tool found its idempotency key: the effect was not repeated."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the checkpointed state and the trace."""
        return {**asdict(self), "status": self.status.value, "sources": list(self.sources)}


class ToolError(PlatformError):
    """A permanent failure: retrying the same call cannot help. Counts against the breaker."""

    status = ToolStatus.FAILED


class TransientToolError(ToolError):
    """A failure the same call may not meet a little later (a dropped connection, a 503):
    retried with backoff, like ``TimeoutError``, ``ConnectionError`` and ``OSError``."""


class ToolRefused(ToolError):
    """The tool will not do this by policy (a write in SQL, a host off the list): the caller
    must ask for something else. Says nothing about the tool's health, so the breaker ignores
    it, and no fallback is tried (it would be asked the same)."""

    status = ToolStatus.REFUSED


class ToolInputError(ToolError):
    """The arguments passed the schema but the call showed them wrong (division by zero, an
    unknown SQL column, a 404): the caller must fix them. Ignored by the breaker."""

    status = ToolStatus.INVALID_INPUT


class UnknownToolError(PlatformError, LookupError):
    """No tool has this name; the message lists the known ones."""


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 3
    """Consecutive failed calls that open the breaker."""
    cooldown_s: float = 30.0
    """How long it stays open before one trial call is let through."""


def text_output(raw: Any) -> tuple[str, Any]:
    """The default output parser: text as it is, anything else as JSON for the model."""
    if isinstance(raw, str):
        return raw, raw
    return json.dumps(raw, ensure_ascii=False, default=str), raw


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what it is, what it takes, what it needs, and how its calls are guarded."""

    name: str
    description: str
    permission: str
    input_model: type[BaseModel]
    """Pydantic model of the arguments, with ``extra="forbid"`` so a misspelt field is caught."""
    run: Callable[[Any, ToolContext], Any]
    """Called with the validated input; returns a raw result for ``parse_output``, or a
    complete ``ToolOutcome``; raises a ``ToolError`` (or a transient OS error) on failure."""
    parse_output: Callable[[Any], tuple[str, Any]] = text_output
    """Raw result -> (content for the model, JSON-able data)."""
    timeout_s: float = 10.0
    max_retries: int = 2
    backoff_s: float = 0.5
    fallback: str | None = None
    side_effecting: bool = False
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    def openai_schema(self) -> dict[str, Any]:
        """The function definition a tool-calling model is offered."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_model.model_json_schema(),
            },
        }


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed until ``failures`` consecutive calls fail, then open (calls fail fast, the tool
    is not called) for ``cooldown_s``, then half-open: one trial call goes through, and its
    success closes the breaker, its failure opens it again. Thread-safe."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.policy.cooldown_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; a True in half-open state is the trial call,
        which must end in ``record_success``, ``record_failure`` or ``release``."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.policy.failures:
                self._opened_at = self._clock()
            self._trial_running = False

    def release(self) -> None:
        """End a call whose result says nothing about the tool's health (a refusal)."""
        with self._lock:
            self._trial_running = False

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.policy.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN


class ToolRegistry:
    """The tools by name. Names are unique and every fallback names a registered tool."""

    def __init__(self, specs: Iterable[ToolSpec]) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"two tools are named {spec.name!r}")
            self._specs[spec.name] = spec
        for spec in self._specs.values():
            if spec.fallback is not None and spec.fallback not in self._specs:
                raise ValueError(
                    f"tool {spec.name!r} falls back to {spec.fallback!r}, which is not registered"
                )

    def get(self, name: str) -> ToolSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownToolError(
                f"no tool is named {name!r}; known tools: {sorted(self._specs)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def permissions(self) -> dict[str, str]:
        """Tool name -> the permission it needs."""
        return {name: spec.permission for name, spec in self._specs.items()}


class _Timeout(Exception):
    """The worker thread did not finish within the tool's timeout."""


class ToolRunner:
    """Runs tool calls with validation, a breaker, a timeout, retries and a fallback.

    ``clock`` drives the breakers' cool-downs and ``sleep`` the backoff; tests pass fakes.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._sleep = sleep
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker of tool ``name`` (one per tool per runner)."""
        spec = self.registry.get(name)
        with self._lock:
            if name not in self._breakers:
                self._breakers[name] = CircuitBreaker(spec.breaker, self._clock)
            return self._breakers[name]

    def call(self, name: str, arguments: dict | str, context: ToolContext) -> ToolOutcome:
        """Run tool ``name``; ``arguments`` may be the JSON text a model wrote.

        Never raises for a failed or refused call: the outcome says what happened and how to
        fix it. Raises ``UnknownToolError`` for a name no tool has.
        """
        started = time.perf_counter()
        outcome = self._call(self.registry.get(name), arguments, context, visited=(name,))
        return replace(outcome, tool=name, duration_ms=(time.perf_counter() - started) * 1000)

    def _call(
        self, spec: ToolSpec, arguments: dict | str, context: ToolContext, visited: tuple[str, ...]
    ) -> ToolOutcome:
        parsed = _validated(spec, arguments)
        if isinstance(parsed, ToolOutcome):
            return parsed
        breaker = self.breaker(spec.name)
        if breaker.allow():
            outcome = self._attempts(spec, parsed, context)
            _record(breaker, outcome.status)
        else:
            outcome = ToolOutcome(
                spec.name,
                ToolStatus.CIRCUIT_OPEN,
                f"{spec.name} is unavailable: it failed {spec.breaker.failures} times in a row, "
                f"so calls are stopped for {breaker.retry_after_s():.0f} s more; use another "
                "tool or try later",
            )
        if outcome.status in FALLBACK_STATUSES and spec.fallback is not None:
            return self._fall_back(spec, arguments, context, outcome, visited)
        return outcome

    def _attempts(self, spec: ToolSpec, parsed: BaseModel, context: ToolContext) -> ToolOutcome:
        """The call, retried with exponential backoff while it fails transiently (the LLM
        client's policy: doubling from ``backoff_s``, capped)."""
        policy = RetryPolicy(spec.timeout_s, spec.max_retries, spec.backoff_s)
        attempts = spec.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                raw = _with_timeout(spec, parsed, context)
            except _Timeout:
                status = ToolStatus.TIMEOUT
                message = f"{spec.name} timed out after {spec.timeout_s:g} s"
            except ToolError as error:
                if not isinstance(error, TransientToolError):
                    return ToolOutcome(spec.name, error.status, str(error), attempts=attempt)
                status, message = ToolStatus.FAILED, f"{spec.name} failed: {error}"
            except (TimeoutError, ConnectionError, OSError) as error:
                status, message = ToolStatus.FAILED, f"{spec.name} failed: {_describe(error)}"
            except Exception as error:  # a bug in the tool: reported, not retried
                logger.exception("tool %s raised", spec.name)
                return ToolOutcome(
                    spec.name,
                    ToolStatus.FAILED,
                    f"{spec.name} failed: {_describe(error)}",
                    attempts=attempt,
                )
            else:
                return _finished(spec, raw, attempt)
            if attempt < attempts:
                delay = policy.delay_s(attempt)
                logger.warning(
                    "%s on attempt %d of %d; retrying in %g s", message, attempt, attempts, delay
                )
                self._sleep(delay)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        return ToolOutcome(spec.name, status, f"{message} ({tries})", attempts=attempts)

    def _fall_back(
        self,
        spec: ToolSpec,
        arguments: dict | str,
        context: ToolContext,
        failed: ToolOutcome,
        visited: tuple[str, ...],
    ) -> ToolOutcome:
        """The fallback's outcome, or the failure with why no fallback answered."""
        fallback = self.registry.get(spec.fallback)
        if fallback.name in visited:
            return failed  # a fallback cycle: every tool in it was tried once
        if isinstance(_validated(fallback, arguments), ToolOutcome):
            note = f"; fallback {fallback.name} not used: these arguments do not fit its input"
            return replace(failed, content=failed.content + note)
        answered = self._call(fallback, arguments, context, (*visited, fallback.name))
        if answered.status is ToolStatus.OK:
            content = (
                f"[{failed.content}; answered by fallback {fallback.name}]\n{answered.content}"
            )
        else:
            content = f"{failed.content}; fallback {fallback.name} also failed: {answered.content}"
        return replace(
            answered,
            content=content,
            attempts=failed.attempts + answered.attempts,
            fallback_used=answered.fallback_used or fallback.name,
        )


def _validated(spec: ToolSpec, arguments: dict | str) -> BaseModel | ToolOutcome:
    """The parsed input, or an INVALID_INPUT outcome naming each wrong field and its type."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError as error:
            return _invalid(spec, f"the arguments are not valid JSON ({error})")
    if not isinstance(arguments, dict):
        return _invalid(
            spec, f"the arguments must be a JSON object, got {type(arguments).__name__}"
        )
    try:
        return spec.input_model.model_validate(arguments)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'arguments'}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        return _invalid(spec, problems)


def _invalid(spec: ToolSpec, problems: str) -> ToolOutcome:
    return ToolOutcome(
        spec.name,
        ToolStatus.INVALID_INPUT,
        f"invalid arguments for {spec.name}: {problems}. Expected {_signature(spec)}; "
        "nothing was run",
    )


def _signature(spec: ToolSpec) -> str:
    """``name(field: type, other: type = default)`` from the input model's JSON schema."""
    schema = spec.input_model.model_json_schema()
    required = set(schema.get("required", ()))
    fields = []
    for field_name, prop in schema.get("properties", {}).items():
        kinds = [option.get("type", "any") for option in prop.get("anyOf", [prop])]
        text = f"{field_name}: {' | '.join(kinds)}"
        if field_name not in required:
            text += f" = {json.dumps(prop.get('default'))}"
        fields.append(text)
    return f"{spec.name}({', '.join(fields)})"


def _with_timeout(spec: ToolSpec, parsed: BaseModel, context: ToolContext) -> Any:
    """``spec.run`` in a daemon worker thread, waited on for ``timeout_s`` at most.

    Python cannot stop a thread, so a call that runs past its timeout lingers until it ends
    on its own (each tool also bounds its own I/O); it is a daemon, so it never holds up exit.
    Context variables (the trace's span) are copied into the worker.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = spec.run(parsed, context)
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    worker = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name=f"tool-{spec.name}", daemon=True
    )
    worker.start()
    worker.join(spec.timeout_s)
    if worker.is_alive():
        raise _Timeout
    if "error" in result:
        raise result["error"]
    return result["value"]


def _finished(spec: ToolSpec, raw: Any, attempts: int) -> ToolOutcome:
    if isinstance(raw, ToolOutcome):
        return replace(raw, tool=spec.name, attempts=attempts)
    try:
        content, data = spec.parse_output(raw)
    except Exception as error:  # a parser bug: the call ran, its result is unusable
        logger.exception("output parser of tool %s raised", spec.name)
        message = f"{spec.name} returned a result its output parser rejected: {_describe(error)}"
        return ToolOutcome(spec.name, ToolStatus.FAILED, message, attempts=attempts)
    return ToolOutcome(spec.name, ToolStatus.OK, content, data=data, attempts=attempts)


def _record(breaker: CircuitBreaker, status: ToolStatus) -> None:
    if status is ToolStatus.OK:
        breaker.record_success()
    elif status in (ToolStatus.FAILED, ToolStatus.TIMEOUT):
        breaker.record_failure()
    else:
        breaker.release()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
