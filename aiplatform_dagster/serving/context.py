"""What every request gets before and after its endpoint: a request id (taken from
``X-Request-ID`` when it is well formed), the body size limit, a server span, the request
metrics and one log line.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each
request's endpoint in a task of its own and streams the response through a memory channel, a
cost every cache hit paid on top of the little work it does.
"""

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from aiplatform_dagster.serving.telemetry import request_span

logger = logging.getLogger("aiplatform.serving")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Observe = Callable[[Scope, str, str, int, float], None]
"""Called once a response has started: (scope, route, method, status, seconds)."""


def error_response(status: int, message: str, request_id: str) -> JSONResponse:
    """The API's error body; the request id header is added by ``RequestContext``."""
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status)


class RequestContext:
    """ASGI middleware around the API; ``observe`` records each finished request."""

    def __init__(self, app: Any, max_body_bytes: int, observe: Observe) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500  # an exception that escapes the app is answered 500 by the server

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        method, path = scope["method"], scope["path"]
        started = time.perf_counter()
        with request_span(method, path, request_id) as span:
            try:
                length = headers.get(b"content-length", b"")
                if length.isdigit() and int(length) > self.max_body_bytes:
                    too_large = f"request body over {self.max_body_bytes} bytes"
                    await error_response(413, too_large, request_id)(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.status_code", status)
                seconds = time.perf_counter() - started
                self.observe(scope, route, method, status, seconds)
                logger.info("%s %s %s -> %s in %.1f ms", request_id, method, path, status,
                            seconds * 1000)  # fmt: skip
