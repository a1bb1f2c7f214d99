"""A lean HTTP/1.1 load generator: asyncio streams, one keep-alive connection per client.

Python HTTP clients such as httpx spend about a millisecond of CPU on each request. On a
2-core machine that CPU is taken from the server under test, so what a bench measured with them
was largely the client. This one writes prebuilt requests and reads ``Content-Length`` bodies,
as wrk or hey do. ``floor_ms`` is the round trip of ``GET /healthz`` under the same load: what
HTTP, the server loop and the generator cost before any work is done.
"""

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    latency_ms: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Load:
    """The replies of one load run, in the order they completed, and its wall time."""

    replies: list[tuple[int, Reply]] = field(default_factory=list)
    """(index of the request in the work list, its reply)."""
    seconds: float = 0.0


class HttpLoad:
    """``clients`` connections to ``base`` sending JSON POSTs with ``headers``."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"the load generator needs http://host:port, not {base}")
        self.host, self.port = parts.hostname, parts.port
        self._head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    def post_many(self, path: str, bodies: Sequence[dict[str, Any]], clients: int) -> Load:
        """POST each body once, ``clients`` at a time (each client takes the next body)."""
        payloads = [json.dumps(body).encode() for body in bodies]
        requests = [self._request("POST", path, payload) for payload in payloads]
        return asyncio.run(self._run(requests, clients))

    def get_many(self, path: str, count: int, clients: int) -> Load:
        return asyncio.run(self._run([self._request("GET", path, b"")] * count, clients))

    def _request(self, method: str, path: str, payload: bytes) -> bytes:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._head}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode("latin-1") + payload

    async def _run(self, requests: Sequence[bytes], clients: int) -> Load:
        load = Load()
        work = iter(enumerate(requests))
        started = time.perf_counter()
        await asyncio.gather(*(self._client(work, load) for _ in range(clients)))
        load.seconds = time.perf_counter() - started
        return load

    async def _client(self, work: Iterable[tuple[int, bytes]], load: Load) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            for index, request in work:
                started = time.perf_counter()
                writer.write(request)
                status, body = await _read_response(reader)
                latency_ms = (time.perf_counter() - started) * 1000
                load.replies.append((index, Reply(status, body, latency_ms)))
        finally:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("the load generator reads Content-Length bodies, not chunked ones")
    return status, await reader.readexactly(length)


def floor_ms(load: HttpLoad, clients: int, requests: int = 2000) -> list[float]:
    """Latencies of ``GET /healthz`` at ``clients`` in flight: the floor under every endpoint."""
    return [reply.latency_ms for _, reply in load.get_many("/healthz", requests, clients).replies]
