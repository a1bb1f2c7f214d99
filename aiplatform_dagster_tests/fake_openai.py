"""A local HTTP server speaking the OpenAI protocol, for tests that run the real openai client.

No LLM can be reached from the test machines, so replies are scripted and deterministic, and
faults (timeouts, 500s, 429s) can be queued to exercise retries. Token counts are whitespace
word counts, so tests can predict them exactly. Any path ending in /chat/completions or
/embeddings is served, which covers both OpenAI (/v1/...) and Azure (/openai/deployments/...).
"""

import base64
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class ToolCallReply:
    """A scripted assistant turn that calls tools: ``calls`` are (name, arguments) pairs, the
    arguments a dict (sent as JSON) or a raw string (to script invalid JSON)."""

    calls: tuple[tuple[str, dict[str, Any] | str], ...]
    text: str | None = None


ChatReply = Callable[[list[dict]], "str | ToolCallReply"]


def cite_first_source(messages: list[dict]) -> str:
    """Default reply: echo the last line of the user's message as an answer citing [1]."""
    lines = str(messages[-1].get("content", "")).strip().splitlines() or [""]
    return f"Answer to: {lines[-1]} [1]"


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower-cased."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as server:`` then point a client at ``server.base_url``."""

    def __init__(
        self,
        chat_reply: ChatReply = cite_first_source,
        embedding_dimension: int = 16,
        hang_s: float = 10.0,
        ignore_requested_dimensions: bool = False,
    ) -> None:
        self.chat_reply = chat_reply
        self.embedding_dimension = embedding_dimension
        self.hang_s = hang_s
        self.ignore_requested_dimensions = ignore_requested_dimensions  # as self-hosted models do
        self.requests: list[RecordedRequest] = []
        self._faults: deque[int | None] = deque()  # HTTP status, or None for "hang"
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The server root, for Azure clients (``azure_endpoint``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def time_out_next(self, requests: int = 1) -> None:
        """The next ``requests`` requests hang for ``hang_s`` (past the client's timeout)."""
        with self._lock:
            self._faults.extend([None] * requests)

    def fail_next(self, requests: int = 1, status: int = 500) -> None:
        """The next ``requests`` requests get an OpenAI-style error with ``status``."""
        with self._lock:
            self._faults.extend([status] * requests)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing.set()  # releases hanging handlers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        """Record the request, apply the next queued fault, else answer it."""
        length = int(handler.headers.get("Content-Length") or 0)
        try:
            body = json.loads(handler.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            return 400, _error(f"request body is not JSON: {error}", "invalid_request_error")
        path = handler.path.split("?", 1)[0]
        with self._lock:
            headers = {name.lower(): value for name, value in handler.headers.items()}
            self.requests.append(RecordedRequest(path, headers, body))
            fault = self._faults.popleft() if self._faults else 0
        if fault is None:
            self._closing.wait(self.hang_s)
            return 504, _error("the fake server hung on purpose", "timeout")
        if fault:
            kind = "rate_limit_exceeded" if fault == 429 else "server_error"
            return fault, _error(f"scripted HTTP {fault}", kind)
        if path.endswith("/chat/completions"):
            return 200, self._chat(body)
        if path.endswith("/embeddings"):
            return 200, self._embeddings(body)
        return 404, _error(f"no route for {path}", "invalid_request_error")

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages", [])
        reply = self.chat_reply(messages)
        prompt_tokens = sum(word_count(str(m.get("content") or "")) for m in messages)
        message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
        finish_reason = "stop"
        if isinstance(reply, ToolCallReply):
            message["content"] = reply.text
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in reply.calls
            ]
            finish_reason = "tool_calls"
        completion_tokens = word_count(str(message["content"] or "")) + sum(
            word_count(call["function"]["arguments"]) for call in message.get("tool_calls", [])
        )
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        requested = None if self.ignore_requested_dimensions else body.get("dimensions")
        dimension = requested or self.embedding_dimension
        data = []
        for index, text in enumerate(texts):
            vector = hash_vector(str(text), dimension)
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{dimension}f", *vector)
                embedding: Any = base64.b64encode(packed).decode()
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(word_count(str(text)) for text in texts)
        return {
            "object": "list",
            "model": body.get("model", "fake-embedding"),
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; with Nagle's algorithm the body waits for
            # the client's delayed ACK of the headers (40 ms on Linux), not "at once".
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                status, payload = server._handle(self)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out) before the reply

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """A base URL whose port accepts connections but never answers, like a hung server.

    The kernel completes the TCP handshake for a listening socket that never calls accept(),
    so the client connects, sends its request and waits for a reply that never comes.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        host, port = listener.getsockname()[:2]
        yield f"http://{host}:{port}/v1"


def closed_port_url() -> str:
    """A base URL on a port nothing listens on, so every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()[:2]
    return f"http://{host}:{port}/v1"


def hash_vector(text: str, dimension: int) -> list[float]:
    """A deterministic unit vector for ``text``: equal texts embed equally, others differ."""
    values: list[float] = []
    block = 0
    while len(values) < dimension:
        digest = hashlib.sha256(f"{block}\x00{text}".encode()).digest()
        values.extend(b / 127.5 - 1.0 for b in digest)
        block += 1
    values = values[:dimension]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
