"""``aiplatform validate``: judge a deployed serving API against a thresholds file.

A release gate that runs from outside the service, over HTTP, as its users reach it:

1. retrieval: every judged golden query is asked through ``POST /v1/query`` (``top_n`` = k, the
   answer cache off), and the document ids of the sources each answer was given, in rank order,
   are scored against the golden judgments with ``evaluation.metrics`` (nDCG@k, recall@k);
2. smoke: a few questions must be answered with at least one citation, and a few agent tasks
   through ``POST /v1/agent`` must end in an accepted status (``completed`` by default);
3. latency: p50/p95 of ``/v1/query`` over the evaluation requests and any repeated ones;
4. errors: the share of all requests that got no 2xx answer.

The key is read from ``AIPLATFORM_VALIDATE_API_KEY`` only (never from the command line, never
printed). Usage and connection problems (a bad thresholds file, no key, a refused key, an
unreachable endpoint) raise ``ValidationUsageError`` before anything is judged: exit code 2.
No Dagster and no model library is imported: this runs in a deploy job's slim environment.
"""

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from aiplatform_dagster.agents.threads import ThreadStatus
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.metrics import evaluate
from aiplatform_dagster.serving.validation_report import (
    Check,
    ValidationReport,
    all_passed,
    at_least,
    at_most_ms,
    error_rate_check,
)

KEY_VARIABLE = "AIPLATFORM_VALIDATE_API_KEY"
RATE_LIMIT_RETRIES = 5
MAX_TOP_N = 20
"""The most sources ``/v1/query`` answers from (``QueryRequest.top_n``)."""

Say = Callable[[str], None]


class ValidationUsageError(PlatformError):
    """The validation could not judge anything (exit code 2); the message says what to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrievalThresholds(_Section):
    k: int = Field(
        default=10,
        ge=1,
        le=MAX_TOP_N,
        description="sources each query asks for and is scored at, 1 to 20, e.g. `k: 10`",
    )
    min_ndcg: float = Field(ge=0, le=1, description="lowest mean nDCG@k, e.g. `min_ndcg: 0.6`")
    min_recall: float = Field(
        ge=0, le=1, description="lowest mean recall@k, e.g. `min_recall: 0.75`"
    )


class LatencyThresholds(_Section):
    max_p50: float | None = Field(
        default=None, gt=0, description="highest p50 in milliseconds, e.g. `max_p50: 1500`"
    )
    max_p95: float = Field(gt=0, description="highest p95 in milliseconds, e.g. `max_p95: 3000`")
    extra_requests: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="queries repeated after the evaluation ones, for more latency samples "
        "(the golden questions in turn), e.g. `extra_requests: 20`",
    )


def _question(value: Any) -> Any:
    return {"question": value} if isinstance(value, str) else value


def _task(value: Any) -> Any:
    return {"request": value} if isinstance(value, str) else value


class SmokeQuery(_Section):
    question: str = Field(min_length=1, description="a question, e.g. `question: AIP-4031`")
    expect_doc: str | None = Field(
        default=None, description="a document id the answer must cite, e.g. `expect_doc: a.md`"
    )


class AgentTask(_Section):
    request: str = Field(min_length=1, description="what the agents should do")
    agent: str | None = Field(default=None, description="an agent of the registry")
    mode: Literal["sequential", "parallel", "hierarchical"] | None = None
    expect_status: list[ThreadStatus] = Field(
        default=[ThreadStatus.COMPLETED],
        min_length=1,
        description="statuses that count as finished, from: "
        + ", ".join(status.value for status in ThreadStatus),
    )
    answer_contains: list[str] = Field(
        default_factory=list, description="texts the answer must contain (any case)"
    )


class SmokeSuite(_Section):
    queries: list[Annotated[SmokeQuery, BeforeValidator(_question)]] = Field(
        default_factory=list, description="questions that must be answered with a citation"
    )
    agent_tasks: list[Annotated[AgentTask, BeforeValidator(_task)]] = Field(
        default_factory=list, description="agent tasks that must finish"
    )


DEFAULT_SMOKE = SmokeSuite(
    queries=[
        SmokeQuery(question="How long are vector index backups kept?"),
        SmokeQuery(question="AIP-4031"),
        SmokeQuery(question="Who is paged first when an incident starts?"),
    ],
    agent_tasks=[
        AgentTask(
            request="What is 17 multiplied by 23? Use the calculator and answer with the "
            'number.\nCALL calculator {"expression": "17*23"}',
            agent="researcher",
            answer_contains=["391"],
        )
    ],
)
"""Used when the thresholds file has no ``smoke`` section."""


class Thresholds(_Section):
    retrieval: RetrievalThresholds = Field(description="the retrieval section (k, min_ndcg, ...)")
    latency_ms: LatencyThresholds = Field(description="the latency section (max_p95, ...)")
    max_error_rate: float = Field(
        ge=0,
        le=1,
        description="highest share of failed requests, 0 to 1, e.g. `max_error_rate: 0.01`",
    )
    smoke: SmokeSuite = Field(default_factory=lambda: DEFAULT_SMOKE.model_copy(deep=True))


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Thresholds,
    ("retrieval",): RetrievalThresholds,
    ("latency_ms",): LatencyThresholds,
    ("smoke",): SmokeSuite,
    ("smoke", "queries"): SmokeQuery,
    ("smoke", "agent_tasks"): AgentTask,
}


def load_thresholds(path: Path) -> Thresholds:
    """The thresholds file, or a ``ValidationUsageError`` naming each bad key and its fix."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationUsageError(f"thresholds file not found: {path}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ValidationUsageError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ValidationUsageError(
            f"{path}: expected a mapping with the keys {_keys(Thresholds)}, got "
            f"{type(data).__name__}"
        )
    try:
        return Thresholds.model_validate(data)
    except ValidationError as error:
        problems = "\n".join(f"  {_explain(item)}" for item in error.errors())
        raise ValidationUsageError(f"{path} is not a valid thresholds file:\n{problems}") from None


def _keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _explain(item: Any) -> str:
    """One pydantic error as a line: the key's dotted path, what is wrong, how to fix it."""
    loc = [str(part) for part in item["loc"]]
    key = ".".join(loc)
    names = tuple(part for part in item["loc"] if isinstance(part, str))
    if item["type"] == "extra_forbidden":
        section = _SECTIONS.get(names[:-1])
        where = ".".join(names[:-1]) or "the top level"
        allowed = f": the keys allowed in {where} are {_keys(section)}" if section else ""
        return f"{key}: unknown key{allowed}; remove it or correct its spelling"
    field = None
    for size in range(len(names), 0, -1):
        section = _SECTIONS.get(names[: size - 1])
        if section is not None and names[size - 1] in section.model_fields:
            field = section.model_fields[names[size - 1]]
            break
    hint = f" ({field.description})" if field is not None and field.description else ""
    if item["type"] == "missing":
        return f"{key}: required key missing: add it{hint}"
    return f"{key}: {item['msg']}, got {item['input']!r}{hint}"


@dataclass(frozen=True)
class Call:
    """One request: its HTTP status (None when no answer came), its time and its JSON body."""

    status: int | None
    ms: float
    body: dict[str, Any]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class ServingClient:
    """The serving API over HTTP with the validation key; waits out 429s, and turns a refused
    key (401/403) into a usage error without ever showing the key."""

    def __init__(self, endpoint: str, key: str, timeout_s: float, say: Say) -> None:
        self.endpoint = endpoint
        self.say = say
        self.http = httpx.Client(
            base_url=endpoint, timeout=timeout_s, headers={"Authorization": f"Bearer {key}"}
        )

    def close(self) -> None:
        self.http.close()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """``GET /readyz``: whether a release is loaded, and what it said."""
        try:
            response = self.http.get("/readyz")
        except httpx.HTTPError as error:
            raise ValidationUsageError(
                f"cannot reach the serving API at {self.endpoint} (GET /readyz: "
                f"{type(error).__name__}: {error}): check --endpoint and that the API is up"
            ) from None
        body = _json(response)
        if response.status_code not in (200, 503) or "ready" not in body:
            raise ValidationUsageError(
                f"{self.endpoint} does not look like the aiplatform serving API: GET /readyz "
                f"answered HTTP {response.status_code}; check --endpoint"
            )
        return bool(body["ready"]), body

    def check_key(self, path: str) -> None:
        """An empty body sent to ``path``: the key is checked before the body, so 401/403 says
        the key will not do (422, the missing field, says it will)."""
        self.post(path, {})

    def post(self, path: str, payload: dict[str, Any]) -> Call:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            started = time.perf_counter()
            try:
                response = self.http.post(path, json=payload)
            except httpx.HTTPError as error:
                ms = (time.perf_counter() - started) * 1000
                return Call(None, ms, {}, f"no answer: {type(error).__name__}: {error}")
            ms = (time.perf_counter() - started) * 1000
            body = _json(response)
            if response.status_code in (401, 403):
                raise ValidationUsageError(
                    f"the serving API at {self.endpoint} refused the key in {KEY_VARIABLE} "
                    f"(POST {path}: HTTP {response.status_code}: {body.get('error', '')}): give "
                    "it a key with the scopes query and agent (`aiplatform key create NAME "
                    "--scope query --scope agent`)"
                )
            if response.status_code == 429 and attempt < RATE_LIMIT_RETRIES:
                wait = float(response.headers.get("Retry-After") or 1)
                self.say(f"rate limited on POST {path}: waiting {wait:g} s")
                time.sleep(wait)
                continue
            error = (
                None
                if response.is_success
                else f"HTTP {response.status_code}: "
                + str(body.get("error") or response.text[:200])
            )
            return Call(response.status_code, ms, body, error)
        raise AssertionError("unreachable")  # the last attempt always returns


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ranked_documents(body: dict[str, Any]) -> list[str]:
    """Document ids of the sources the answer was given, best first, each once."""
    return list(dict.fromkeys(str(source["doc_id"]) for source in body.get("sources") or []))


def run_validation(
    endpoint: str,
    thresholds_file: Path,
    golden: Path,
    *,
    repeat: int | None = None,
    timeout_s: float = 120.0,
    say: Say | None = None,
    environ: dict[str, str] | None = None,
) -> ValidationReport:
    """Judge the API at ``endpoint``; ``repeat`` overrides ``latency_ms.extra_requests``."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    thresholds = load_thresholds(thresholds_file)
    endpoint = endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise ValidationUsageError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
    key = (os.environ if environ is None else environ).get(KEY_VARIABLE, "").strip()
    if not key:
        raise ValidationUsageError(
            f"no API key: set {KEY_VARIABLE} to a key with the scopes query and agent "
            "(it is read from the environment only, never from the command line)"
        )
    try:
        queries, qrels = load_judged_queries(golden)
    except PlatformError as error:
        raise ValidationUsageError(f"golden set {golden}: {error}") from None
    if not any(grade > 0 for grades in qrels.values() for grade in grades.values()):
        raise ValidationUsageError(f"golden set {golden}: no query has a relevant document")
    client = ServingClient(endpoint, key, timeout_s, say)
    try:
        return _judge(client, thresholds, thresholds_file, golden, queries, qrels, repeat)
    finally:
        client.close()


def _judge(
    client: ServingClient,
    thresholds: Thresholds,
    thresholds_file: Path,
    golden: Path,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    repeat: int | None,
) -> ValidationReport:
    say, k, smoke = client.say, thresholds.retrieval.k, thresholds.smoke
    ready, readyz = client.ready()
    report = _report_args(client, thresholds_file, golden, readyz)
    why = readyz.get("last_refresh_error") or "no serving release loaded"
    shown = "ready" if ready else f"not ready: {why}"
    ready_check = Check("ready", "ready", ready, shown, "ready", None, ready)
    if not ready:
        return ValidationReport(
            **report, checks=[ready_check], requests={}, latency_ms={}, queries=[]
        )
    client.check_key("/v1/query")
    if smoke.agent_tasks:
        client.check_key("/v1/agent")

    calls: list[Call] = []
    run: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    say(f"evaluation: {len(queries)} golden queries to {client.endpoint}/v1/query (top_n {k})")
    for number, (query_id, text) in enumerate(queries.items(), start=1):
        call = client.post("/v1/query", {"question": text, "top_n": k, "use_cache": False})
        calls.append(call)
        run[query_id] = _ranked_documents(call.body) if call.ok else []
        rows.append(
            {
                "id": query_id,
                "status": call.status,
                "ms": round(call.ms, 1),
                "kind": call.body.get("kind"),
                "documents": run[query_id],
                "error": call.error,
            }
        )
        say(
            f"[{number}/{len(queries)}] {query_id}: {call.error or call.status} in {call.ms:.0f} ms"
        )
    extra = thresholds.latency_ms.extra_requests if repeat is None else repeat
    repeated = []
    if extra:
        say(f"latency: {extra} repeated queries")
    for number, text in enumerate(islice(cycle(queries.values()), extra), start=1):
        call = client.post("/v1/query", {"question": text, "top_n": k, "use_cache": False})
        repeated.append(call)
        say(f"[{number}/{extra}] {call.error or call.status} in {call.ms:.0f} ms")
    timed = [call.ms for call in calls + repeated if call.ok]
    latency = {key: round(v, 1) for key, v in percentiles(timed, (50, 95)).items()} if timed else {}

    query_failures, query_calls = _smoke_queries(client, smoke.queries)
    agent_failures, agent_calls = _agent_tasks(client, smoke.agent_tasks)
    every = calls + repeated + query_calls + agent_calls
    errors = [call.error for call in every if not call.ok]

    scores = evaluate(run, qrels, [f"ndcg@{k}", f"recall@{k}"])
    checks = [
        ready_check,
        at_least(
            "retrieval.min_ndcg",
            f"retrieval nDCG@{k}",
            scores[f"ndcg@{k}"],
            thresholds.retrieval.min_ndcg,
        ),
        at_least(
            "retrieval.min_recall",
            f"retrieval recall@{k}",
            scores[f"recall@{k}"],
            thresholds.retrieval.min_recall,
        ),
        at_most_ms(
            "latency_ms.max_p50",
            "latency p50",
            latency.get("p50_ms"),
            thresholds.latency_ms.max_p50,
        ),
        at_most_ms(
            "latency_ms.max_p95",
            "latency p95",
            latency.get("p95_ms"),
            thresholds.latency_ms.max_p95,
        ),
        error_rate_check(errors, len(every), thresholds.max_error_rate),
        all_passed("smoke.queries", "smoke queries", "cited", query_failures, len(smoke.queries)),
        all_passed(
            "smoke.agent_tasks",
            "smoke agent tasks",
            "finished",
            agent_failures,
            len(smoke.agent_tasks),
        ),
    ]
    counts = {
        "evaluation": len(calls),
        "repeated": len(repeated),
        "smoke_queries": len(query_calls),
        "agent_tasks": len(agent_calls),
    }
    return ValidationReport(
        **report, checks=checks, requests=counts, latency_ms=latency, queries=rows
    )


def _report_args(
    client: ServingClient, thresholds_file: Path, golden: Path, readyz: dict[str, Any]
) -> dict[str, Any]:
    return {
        "endpoint": client.endpoint,
        "thresholds_file": str(thresholds_file),
        "golden": str(golden),
        "release_id": readyz.get("release_id"),
        "index_release": readyz.get("index_release"),
    }


def _smoke_queries(client: ServingClient, suite: list[SmokeQuery]) -> tuple[list[str], list[Call]]:
    failures, calls = [], []
    for number, item in enumerate(suite, start=1):
        call = client.post("/v1/query", {"question": item.question, "use_cache": False})
        calls.append(call)
        cited = [str(c.get("doc_id")) for c in call.body.get("citations") or []]
        if not call.ok:
            failures.append(f"query {item.question!r}: {call.error}")
        elif not cited:
            why = call.body.get("review") or call.body.get("kind") or "no citation"
            failures.append(f"query {item.question!r}: answered without a citation ({why})")
        elif item.expect_doc and item.expect_doc not in cited:
            failures.append(f"query {item.question!r}: cited {cited}, not {item.expect_doc}")
        verdict = "ok" if len(failures) < number else "FAIL"
        client.say(f"smoke query [{number}/{len(suite)}] {verdict} in {call.ms:.0f} ms")
    return failures, calls


def _agent_tasks(client: ServingClient, suite: list[AgentTask]) -> tuple[list[str], list[Call]]:
    failures, calls = [], []
    for number, task in enumerate(suite, start=1):
        payload = {"request": task.request}
        payload.update(
            {name: getattr(task, name) for name in ("agent", "mode") if getattr(task, name)}
        )
        call = client.post("/v1/agent", payload)
        calls.append(call)
        label = f"agent task {task.request.splitlines()[0][:60]!r}"
        status, answer = call.body.get("status"), str(call.body.get("answer") or "")
        missing = [text for text in task.answer_contains if text.lower() not in answer.lower()]
        if not call.ok:
            failures.append(f"{label}: {call.error}")
        elif status not in task.expect_status:
            accepted = " or ".join(task.expect_status)
            reason = call.body.get("reason") or "no reason given"
            failures.append(f"{label}: status {status} ({reason}), expected {accepted}")
        elif missing:
            failures.append(f"{label}: the answer lacks {missing}: {answer[:120]!r}")
        verdict = "ok" if len(failures) < number else "FAIL"
        client.say(f"smoke agent task [{number}/{len(suite)}] {verdict} in {call.ms:.0f} ms")
    return failures, calls
