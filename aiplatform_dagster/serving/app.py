"""The query and agent API: FastAPI over the live serving release and the agent runtime.

Built from the shared configuration like the CLI, with no Dagster import. The live pointer of the
serving releases (``serving/release.py``) is re-read every ``AIPLATFORM_SERVING_REFRESH_S`` by a
background thread; a request in flight keeps the engine it started with, and a release that fails
to load leaves the last good one serving (``/readyz`` says why). Every response carries
``X-Request-ID`` and every log line the same id.
"""

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aiplatform_dagster.agents.threads import approval_of
from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.serving.audit import AuditEntry, open_audit_log
from aiplatform_dagster.serving.context import RequestContext, error_response
from aiplatform_dagster.serving.docs import serve_docs
from aiplatform_dagster.serving.feedback import (
    Feedback,
    FlaggedQuery,
    open_feedback_store,
    review_reason,
)
from aiplatform_dagster.serving.keys import (
    ApiKey,
    AuthError,
    KeyStore,
    Scope,
    authorize,
    keys_path,
)
from aiplatform_dagster.serving.metrics import ServingMetrics
from aiplatform_dagster.serving.rate_limit import open_rate_limiter
from aiplatform_dagster.serving.requests import (
    AgentRequest,
    FeedbackRequest,
    QueryRequest,
    ResumeRequest,
)
from aiplatform_dagster.serving.spend import open_spend_ledger
from aiplatform_dagster.serving.telemetry import configure_tracing

if TYPE_CHECKING:
    from aiplatform_dagster.rag.query.engine import Lookup

logger = logging.getLogger("aiplatform.serving")


class Service:
    """What the API serves from: the live query engine and (when an LLM is configured) the
    agent runtime, opened once for the process."""

    def __init__(self, settings: Settings, live: Any, agents: Any, agents_error: str | None):
        self.settings = settings
        self.live = live
        self.agents = agents
        self.agents_error = agents_error
        self.keys = KeyStore.load(keys_path(settings))
        self.last_refresh_error: str | None = None
        self._agents_lock = threading.Lock()
        self.audit = open_audit_log(settings)
        self.feedback = open_feedback_store(settings)
        self.metrics = ServingMetrics(
            open_spend_ledger(settings),
            settings.serving.monthly_budget_usd,
            self.live_labels,
            settings.paths.storage_dir / "monitoring" / "reports",
            self.audit,
        )
        self.limiter = open_rate_limiter(
            settings, lambda: self.metrics.errors.labels("rate_limit_store").inc()
        )

    def live_labels(self) -> dict[str, str]:
        """The release being served, as the labels of the ``aiplatform_release`` info metric."""
        versions = self.live.versions
        return {
            "release_id": self.live.name,
            "index_release": self.live.release_id,
            "router_version": versions.router or "none",
            "reranker_version": versions.reranker or "none",
        }

    def refresh(self) -> None:
        """Follow the live release, and the key file (a created or revoked key takes effect
        within one refresh, without a restart)."""
        self.keys = KeyStore.load(keys_path(self.settings))
        reload = self.live.refresh()
        self.last_refresh_error = reload.error
        if reload.error:
            logger.error("live release not refreshed, still serving %s: %s", reload.name,
                         reload.error)  # fmt: skip
        elif reload.moved:
            logger.info("now serving release %s (index %s)", reload.name, reload.release_id)


def create_app(
    settings: Settings,
    *,
    live_factory: Callable[[Settings], Any] | None = None,
    open_agents: Callable[[Settings], Any] | None = None,
) -> FastAPI:
    """The API over ``settings``. ``live_factory`` builds the live engine (default: a
    ``rag.factory.LiveQueryEngine`` following the live serving release) and ``open_agents`` the
    agent runtime's context manager (default: ``agents.runtime.open_runtime``); both are opened
    when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        with ExitStack() as stack:
            app.state.service = _start(settings, live_factory, open_agents, stack)
            # What start-up loaded (models, tokenizers, indexes: millions of objects) lives as
            # long as the process: kept out of the collector's full passes, which otherwise
            # rescan all of it and stall requests for tens of milliseconds.
            gc.freeze()
            stop = threading.Event()
            refresher = threading.Thread(
                target=_refresh_loop, args=(app.state.service, stop), daemon=True
            )
            refresher.start()
            stack.callback(stop.set)
            yield

    app = FastAPI(
        title="aiplatform",
        version="1",
        description="Questions answered with citations from the live serving release, and agent "
        "workflows. Send your key as `Authorization: Bearer <key>`.",
        lifespan=lifespan,
        docs_url=None,  # served offline by serve_docs
        redoc_url=None,
    )
    serve_docs(app)

    app.add_middleware(RequestContext, max_body_bytes=settings.serving.max_body_bytes,
                       observe=_observe_request)  # fmt: skip

    def service(request: Request) -> Service:
        return request.app.state.service

    def caller(scope: Scope) -> Callable[[Request], ApiKey]:
        async def check(request: Request) -> ApiKey:
            """On the event loop: the key store is in memory, and so is the rate limiter
            unless it is Redis's (then a worker thread waits for it)."""
            svc = service(request)
            try:
                key = authorize(svc.keys, request.headers, scope)
            except AuthError as error:
                raise HTTPException(error.status, str(error), headers=error.headers) from None
            take = partial(svc.limiter.acquire, key.name, key.requests_per_minute)
            wait = take() if svc.limiter.in_process else await run_in_threadpool(take)
            if wait is not None:
                raise HTTPException(
                    429,
                    f"rate limit of {key.requests_per_minute} requests per minute reached",
                    headers={"Retry-After": str(int(wait))},
                )
            return key

        return check

    query_key = Annotated[ApiKey, Depends(caller(Scope.QUERY))]
    agent_key = Annotated[ApiKey, Depends(caller(Scope.AGENT))]

    origins = [o.strip() for o in settings.serving.cors_origins.split(",") if o.strip()]
    if origins:  # off unless configured: browsers then refuse cross-origin calls
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"])

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'body'}: {item['msg']}"
            for item in error.errors()
        )
        return error_response(422, f"invalid request: {problems}", request.state.request_id)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        response = error_response(error.status_code, str(error.detail), request.state.request_id)
        response.headers.update(error.headers or {})
        return response

    @app.get("/healthz", summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics.", response_class=PlainTextResponse)
    def metrics(request: Request) -> PlainTextResponse:
        registry = service(request).metrics.registry
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", summary="A release is loaded and serving.")
    def readyz(request: Request) -> JSONResponse:
        svc = service(request)
        body = {
            "release_id": svc.live.name,
            "index_release": svc.live.release_id,
            "agents": "ready" if svc.agents is not None else svc.agents_error,
            "last_refresh_error": svc.last_refresh_error,
            "audit": svc.audit.status(),
        }
        ready = bool(svc.live.name)
        return JSONResponse({"ready": ready, **body}, status_code=200 if ready else 503)

    @app.post(
        "/v1/query",
        summary="Answer a question with cited sources.",
        response_model=dict[str, Any],
    )
    async def query(body: QueryRequest, request: Request, key: query_key) -> JSONResponse:
        """A cached answer is served on the event loop; anything needing the models runs in a
        worker thread (as does a lookup in a shared cache such as Redis)."""
        from aiplatform_dagster.rag.query.retriever import SearchMode

        svc = service(request)
        if len(body.question) > settings.serving.max_query_chars:
            raise HTTPException(413, f"question over {settings.serving.max_query_chars} characters")
        release_id, engine = svc.live.snapshot()  # kept for this request, even across a swap
        defaults = engine.defaults
        options = replace(
            defaults,
            mode=SearchMode(body.mode) if body.mode else None,
            top_n=body.top_n or defaults.top_n,
            candidates=max(defaults.candidates, body.top_n or 0),
            use_cache=body.use_cache,
        )

        def respond(lookup: "Lookup") -> JSONResponse:
            try:
                answer = engine.answer(lookup)
            except (PlatformError, ValueError) as error:
                raise HTTPException(400, str(error)) from None
            svc.metrics.observe_answer(answer)
            citations = [citation.doc_id for citation in answer.citations]
            reason = review_reason(answer)
            request_id = request.state.request_id
            if reason:
                svc.feedback.flag(
                    FlaggedQuery(request_id, body.question, answer.text, release_id, reason,
                                 citations)
                )  # fmt: skip
            svc.audit.record(
                AuditEntry(request_id, key.name, "/v1/query", 200, body.question, answer.text,
                           release_id, citations, answer.usage.cost_usd, answer.total_ms)
            )  # fmt: skip
            return JSONResponse(
                {
                    **answer.as_dict(),
                    "release_id": release_id,
                    "index_release": engine.retriever.release_id,
                    "request_id": request_id,
                    "review": reason,
                }
            )

        try:
            if engine.looks_up_locally:
                lookup = engine.look_up(body.question, options)
            else:
                lookup = await run_in_threadpool(engine.look_up, body.question, options)
        except (PlatformError, ValueError) as error:
            raise HTTPException(400, str(error)) from None
        if lookup.hit is not None:
            return respond(lookup)
        return await run_in_threadpool(respond, lookup)

    @app.post("/v1/feedback", summary="Rate an answer, correct it, or flag it for a labeller.")
    def feedback(body: FeedbackRequest, request: Request, key: query_key) -> dict[str, Any]:
        svc = service(request)
        flagged = svc.feedback.flagged()
        if body.question is None and body.request_id not in flagged:
            raise HTTPException(
                422,
                f"request {body.request_id} was not kept for labelling: send the question "
                "with the feedback (field 'question')",
            )
        entry = Feedback(**body.model_dump())
        svc.feedback.add(entry)
        svc.audit.record(
            AuditEntry(request.state.request_id, key.name, "/v1/feedback", 200,
                       f"feedback on {body.request_id}: rated {body.rating}",
                       body.corrected_answer or body.note, "")
        )  # fmt: skip
        return {
            "recorded": True,
            "request_id": body.request_id,
            "label": entry.is_label,
            "queued": not entry.is_label and (entry.needs_label or body.request_id in flagged),
        }

    def runtime(request: Request) -> Any:
        svc = service(request)
        if svc.agents is None:
            raise HTTPException(503, f"agents are not available: {svc.agents_error}")
        return svc

    @app.post("/v1/agent", summary="Run a request through an agent workflow.")
    def run_agent(body: AgentRequest, request: Request, key: agent_key) -> dict[str, Any]:
        svc = runtime(request)
        try:
            result = svc.agents.run(
                body.request, agent=body.agent, mode=body.mode, subtasks=body.subtasks
            )
        except PlatformError as error:
            raise HTTPException(400, str(error)) from None
        audit_agent(svc, request, key, "/v1/agent", body.request, result)
        return {**result.as_dict(), "request_id": request.state.request_id}

    @app.get("/v1/agent/{thread_id}", summary="Where a thread stands.")
    def agent_thread(thread_id: str, request: Request, key: agent_key) -> dict[str, Any]:
        svc = runtime(request)
        try:
            record = svc.agents.threads.get(thread_id)
        except PlatformError as error:
            raise HTTPException(400, str(error)) from None
        if record is None:
            raise HTTPException(404, f"no thread {thread_id}")
        return {
            "thread_id": record.thread_id,
            "agent": record.agent,
            "mode": record.mode,
            "status": record.status.value,
            "reason": record.reason,
            "updated_at": record.updated_at.isoformat() if record.updated_at else None,
        }

    @app.post("/v1/agent/{thread_id}/resume", summary="Answer or continue a thread.")
    def resume_agent(
        thread_id: str,
        body: ResumeRequest,
        request: Request,
        key: agent_key,
    ) -> dict[str, Any]:
        svc = runtime(request)
        approve = approval_of(body.decision)
        try:
            result = svc.agents.resume(thread_id, approve, body.note)
        except PlatformError as error:
            raise HTTPException(409, str(error)) from None
        decision = f"resume {thread_id}: {body.decision}" + (f" ({body.note})" if body.note else "")
        audit_agent(svc, request, key, "/v1/agent/{thread_id}/resume", decision, result)
        return {**result.as_dict(), "request_id": request.state.request_id}

    return app


def audit_agent(
    svc: Service, request: Request, key: ApiKey, endpoint: str, asked: str, result: Any
) -> None:
    """Count an agent run's spend and keep who asked what and how it ended."""
    svc.metrics.observe_agent(result.spend)
    answer = f"[{result.status}] {result.answer or result.reason or ''}"
    svc.audit.record(
        AuditEntry(request.state.request_id, key.name, endpoint, 200, asked, answer,
                   f"thread {result.thread_id}", list(result.citations),
                   float(result.spend.get("cost_usd", 0.0)), result.latency_ms)
    )  # fmt: skip


def _start(
    settings: Settings,
    live_factory: Callable[[Settings], Any] | None,
    open_agents: Callable[[Settings], Any] | None,
    stack: ExitStack,
) -> Service:
    """Load the live release; open the agent runtime when an LLM is configured (the query path
    works without one: extractive answers)."""
    from aiplatform_dagster.agents.runtime import open_runtime
    from aiplatform_dagster.rag.factory import LiveQueryEngine
    from aiplatform_dagster.serving.release import follow_live

    tracing = configure_tracing(settings.agents.otlp_endpoint)
    if tracing is not None:  # at shutdown, before uvicorn re-raises SIGTERM: spans are flushed
        stack.callback(tracing.shutdown)
    live = (live_factory or (lambda s: LiveQueryEngine(s, follow_live(s))))(settings)
    agents, agents_error = None, None
    try:
        agents = stack.enter_context((open_agents or open_runtime)(settings))
    except PlatformError as error:
        agents_error = str(error)
        logger.warning("agent endpoints disabled: %s", error)
    service = Service(settings, live, agents, agents_error)
    stack.callback(service.audit.close)
    return service


def _refresh_loop(service: Service, stop: threading.Event) -> None:
    while not stop.wait(service.settings.serving.refresh_s):
        service.refresh()


def _observe_request(scope: Any, route: str, method: str, status: int, seconds: float) -> None:
    scope["app"].state.service.metrics.observe_request(route, method, status, seconds)
