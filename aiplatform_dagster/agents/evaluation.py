"""The agents' evaluation suite: tasks with expected outcomes, run through the real runtime.

Each task runs on a fresh thread, exactly as a user's request would, and is judged on what the
workflow did (status, tools called or refused) as well as on its answer, so a regression in
governance fails the suite like a wrong number does. The report gives, per execution mode, the
success rate, steps, latency percentiles, tokens and cost per workflow: the figures the
``agent_eval`` asset plots over its materialisations.
"""

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiplatform_dagster.agents.definitions import Mode
from aiplatform_dagster.agents.threads import ThreadStatus
from aiplatform_dagster.errors import PlatformError

if TYPE_CHECKING:
    from aiplatform_dagster.agents.runtime import AgentRuntime, RunResult

PACKAGED_SUITE = Path(__file__).resolve().parent / "eval_suite.yaml"
ERROR = "error"
"""The status of a task whose run raised instead of ending with a status."""
EVAL_NOTE = "agent evaluation: no human approves calls during an eval run"


class SuiteError(PlatformError):
    """An evaluation suite that cannot be read or does not validate; the message says where."""


class Expected(BaseModel):
    """What a task must end with to pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: ThreadStatus = ThreadStatus.COMPLETED
    answer_contains: tuple[str, ...] = Field(default=(), description="Case-insensitive.")
    min_tool_calls: int = Field(default=0, ge=0, description="Refused calls count too.")
    max_tool_calls: int | None = Field(default=None, ge=0)
    refused: int | None = Field(default=None, ge=0, description="Exact number of refused calls.")
    never_runs: tuple[str, ...] = Field(
        default=(), description="Tools governance must stop: any call of them must be refused."
    )


class EvalTask(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    mode: Mode
    agent: str
    request: str = Field(min_length=1)
    expected: Expected = Field(default_factory=Expected)


class EvalSuite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    tasks: tuple[EvalTask, ...] = Field(min_length=1)
    source: str = ""

    @model_validator(mode="after")
    def _unique_ids(self) -> "EvalSuite":
        ids = [task.id for task in self.tasks]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"task ids must be unique; repeated: {repeated}")
        return self


def load_suite(path: Path | None = None) -> EvalSuite:
    """The suite in ``path``, or the packaged one; SuiteError names the file and the field."""
    path = path or PACKAGED_SUITE
    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SuiteError(f"{path}: not a readable YAML evaluation suite ({error})") from None
    try:
        return EvalSuite.model_validate(
            {**(raw if isinstance(raw, dict) else {}), "source": str(path)}
        )
    except ValidationError as error:
        problems = "; ".join(
            f"field {'.'.join(str(part) for part in item['loc']) or '(top)'}: {item['msg']}"
            for item in error.errors()
        )
        raise SuiteError(f"{path}: expected `version: 1` and a list `tasks:`; {problems}") from None


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome and what its workflow spent."""

    task: str
    mode: str
    agent: str
    thread_id: str
    status: str
    passed: bool
    failures: tuple[str, ...]
    steps: int
    tool_calls: int
    refused: int
    tokens: int
    cost_usd: float
    latency_ms: float
    answer: str

    def row(self) -> dict[str, Any]:
        """The task as a table row, failures joined into one cell."""
        return {**asdict(self), "failures": "; ".join(self.failures)}


@dataclass(frozen=True)
class ModeSummary:
    """A mode's tasks in figures; steps, tokens and cost are means per workflow."""

    mode: str
    tasks: int
    passed: int
    success_rate: float
    steps: float
    latency_p50_ms: float
    latency_p95_ms: float
    tokens: float
    cost_usd: float


@dataclass(frozen=True)
class SuiteReport:
    source: str
    tasks: tuple[TaskResult, ...]

    @property
    def passed(self) -> int:
        return sum(task.passed for task in self.tasks)

    @property
    def success_rate(self) -> float:
        return self.passed / len(self.tasks) if self.tasks else 0.0

    def modes(self) -> list[ModeSummary]:
        """One summary per mode that has tasks, in the order of ``Mode``."""
        from aiplatform_dagster.evaluation.latency import percentiles

        summaries = []
        for mode in Mode:
            tasks = [task for task in self.tasks if task.mode == mode.value]
            if not tasks:
                continue
            latency = percentiles([task.latency_ms for task in tasks], (50, 95))
            passed = sum(task.passed for task in tasks)
            summaries.append(
                ModeSummary(
                    mode=mode.value,
                    tasks=len(tasks),
                    passed=passed,
                    success_rate=passed / len(tasks),
                    steps=_mean([task.steps for task in tasks]),
                    latency_p50_ms=latency["p50_ms"],
                    latency_p95_ms=latency["p95_ms"],
                    tokens=_mean([task.tokens for task in tasks]),
                    cost_usd=_mean([task.cost_usd for task in tasks]),
                )
            )
        return summaries


def run_suite(
    runtime: "AgentRuntime",
    suite: EvalSuite,
    on_task: Callable[[TaskResult], None] | None = None,
) -> SuiteReport:
    """Run every task on a fresh thread and judge it. A task whose run raises fails with the
    error; one that stops for a human fails too, and is rejected so no eval thread is left
    waiting in the escalations."""
    results = []
    for task in suite.tasks:
        thread_id = f"eval-{task.id}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        try:
            result = runtime.run(
                task.request, agent=task.agent, mode=task.mode, thread_id=thread_id
            )
            waited = result.reason if result.status == ThreadStatus.WAITING else None
            while result.status == ThreadStatus.WAITING:  # ends: every call spends the budget
                resumed = runtime.resume(thread_id, approve=False, note=EVAL_NOTE)
                result = replace(resumed, latency_ms=result.latency_ms + resumed.latency_ms)
        except PlatformError as error:
            elapsed_ms = (time.perf_counter() - started) * 1000
            outcome = _errored(task, thread_id, f"{type(error).__name__}: {error}", elapsed_ms)
        else:
            outcome = _judged(task, result, waited)
        results.append(outcome)
        if on_task is not None:
            on_task(outcome)
    return SuiteReport(suite.source, tuple(results))


def _judged(task: EvalTask, result: "RunResult", waited: str | None) -> TaskResult:
    expected = task.expected
    calls = result.tool_results
    refused = sum(call["status"] == "refused" for call in calls)
    failures = []
    if waited is not None:
        failures.append(f"stopped for a human ({waited}); rejected to end the eval thread")
    if result.status != expected.status:
        why = f" ({result.reason})" if result.reason else ""
        failures.append(f"ended {result.status}{why}, expected {expected.status.value}")
    answer = result.answer.lower()
    failures += [
        f"answer lacks {text!r}" for text in expected.answer_contains if text.lower() not in answer
    ]
    if len(calls) < expected.min_tool_calls:
        failures.append(f"{len(calls)} tool calls, expected at least {expected.min_tool_calls}")
    if expected.max_tool_calls is not None and len(calls) > expected.max_tool_calls:
        failures.append(f"{len(calls)} tool calls, expected at most {expected.max_tool_calls}")
    if expected.refused is not None and refused != expected.refused:
        failures.append(f"{refused} calls refused, expected {expected.refused}")
    ran = sorted(
        {c["tool"] for c in calls if c["tool"] in expected.never_runs and c["status"] != "refused"}
    )
    if ran:
        failures.append(f"ran {', '.join(ran)}, which governance must refuse")
    spent = result.spend
    return TaskResult(
        task=task.id,
        mode=result.mode,
        agent=result.agent,
        thread_id=result.thread_id,
        status=result.status,
        passed=not failures,
        failures=tuple(failures),
        steps=int(spent.get("steps", 0)),
        tool_calls=len(calls),
        refused=refused,
        tokens=int(spent.get("prompt_tokens", 0) + spent.get("completion_tokens", 0)),
        cost_usd=float(spent.get("cost_usd", 0.0)),
        latency_ms=result.latency_ms,
        answer=result.answer,
    )


def _errored(task: EvalTask, thread_id: str, error: str, latency_ms: float) -> TaskResult:
    return TaskResult(
        task=task.id,
        mode=task.mode.value,
        agent=task.agent,
        thread_id=thread_id,
        status=ERROR,
        passed=False,
        failures=(error,),
        steps=0,
        tool_calls=0,
        refused=0,
        tokens=0,
        cost_usd=0.0,
        latency_ms=latency_ms,
        answer="",
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
