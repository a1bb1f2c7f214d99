"""http_get against a local HTTP server: allow-listed hosts only, redirects checked hop by hop,
bodies cut at the size limit."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aiplatform_dagster.agents.tools.base import ToolContext, ToolRegistry, ToolRunner, ToolStatus
from aiplatform_dagster.agents.tools.http import http_get_tool
from aiplatform_dagster.config import load_settings

CONTEXT = ToolContext("thread-1", "web_reader", "step-1:0")
MAX_BYTES = 1000
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/hello": (
        200,
        {"Content-Type": "text/plain; charset=utf-8"},
        "héllo from the server".encode(),
    ),
    "/big": (200, {"Content-Type": "text/html"}, b"x" * (MAX_BYTES * 5)),
    "/image": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n"),
    "/redirect-in": (302, {"Location": "/hello"}, b""),
    "/redirect-out": (302, {"Location": "http://not-allowed.example/steal"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/broken": (503, {}, b"try later"),
}


class Server:
    """A local web server that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(self.path)
                status, headers, body = ROUTES.get(self.path, (404, {}, b"no such page"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(
        target=server.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()
    thread.join()


def runner_for(allowed: str = "127.0.0.1") -> ToolRunner:
    settings = load_settings(
        {
            "AIPLATFORM_AGENTS_HTTP_ALLOWED_HOSTS": allowed,
            "AIPLATFORM_AGENTS_HTTP_MAX_BYTES": str(MAX_BYTES),
        }
    )
    return ToolRunner(ToolRegistry([http_get_tool(settings)]), sleep=lambda _: None)


def test_a_page_on_an_allowed_host_is_fetched(server: Server) -> None:
    outcome = runner_for(" Example.org, 127.0.0.1 ").call(
        "http_get", {"url": server.url("/hello")}, CONTEXT
    )

    assert outcome.status is ToolStatus.OK, outcome.content
    assert outcome.data == {
        "url": server.url("/hello"),
        "status": 200,
        "content_type": "text/plain; charset=utf-8",
        "bytes": len("héllo from the server".encode()),
        "truncated": False,
        "text": "héllo from the server",
    }
    assert outcome.content.endswith("\n\nhéllo from the server")
    assert server.requests == ["/hello"]


def test_a_host_off_the_list_is_refused_without_a_request(server: Server) -> None:
    runner = runner_for()

    by_name = runner.call("http_get", {"url": server.url("/hello", host="localhost")}, CONTEXT)
    userinfo = runner.call("http_get", {"url": "http://127.0.0.1@evil.example/"}, CONTEXT)

    assert by_name.status is userinfo.status is ToolStatus.REFUSED
    assert "host 'localhost' is not allow-listed (allowed: ['127.0.0.1'])" in by_name.content
    assert "AIPLATFORM_AGENTS_HTTP_ALLOWED_HOSTS" in by_name.content
    assert "host 'evil.example' is not allow-listed" in userinfo.content
    assert server.requests == []


def test_with_no_hosts_configured_nothing_is_fetched(server: Server) -> None:
    outcome = runner_for("").call("http_get", {"url": server.url("/hello")}, CONTEXT)

    assert outcome.status is ToolStatus.REFUSED
    assert "may fetch from no host" in outcome.content and server.requests == []


def test_a_body_past_the_size_limit_is_cut_and_says_so(server: Server) -> None:
    outcome = runner_for().call("http_get", {"url": server.url("/big")}, CONTEXT)

    assert outcome.status is ToolStatus.OK
    assert outcome.data["bytes"] == MAX_BYTES and outcome.data["truncated"] is True
    assert outcome.data["text"] == "x" * MAX_BYTES
    assert f"truncated at {MAX_BYTES} bytes" in outcome.content.splitlines()[0]


def test_a_binary_body_is_described_not_shown(server: Server) -> None:
    outcome = runner_for().call("http_get", {"url": server.url("/image")}, CONTEXT)

    assert outcome.status is ToolStatus.OK and outcome.data["text"] is None
    assert outcome.content.endswith("image/png, 6 bytes): binary content, not shown")


def test_redirects_are_followed_only_to_allowed_hosts(server: Server) -> None:
    runner = runner_for()

    inside = runner.call("http_get", {"url": server.url("/redirect-in")}, CONTEXT)
    outside = runner.call("http_get", {"url": server.url("/redirect-out")}, CONTEXT)

    assert inside.status is ToolStatus.OK and inside.data["url"] == server.url("/hello")
    assert outside.status is ToolStatus.REFUSED
    assert "host 'not-allowed.example' is not allow-listed" in outside.content
    assert server.requests == ["/redirect-in", "/hello", "/redirect-out"]


def test_a_redirect_loop_is_cut_after_three_redirects(server: Server) -> None:
    outcome = runner_for().call("http_get", {"url": server.url("/loop")}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED
    assert "redirected more than 3 times" in outcome.content
    assert server.requests == ["/loop"] * 4


def test_client_errors_are_bad_input_and_server_errors_are_retried(server: Server) -> None:
    runner = runner_for()

    missing = runner.call("http_get", {"url": server.url("/missing")}, CONTEXT)
    broken = runner.call("http_get", {"url": server.url("/broken")}, CONTEXT)
    not_http = runner.call("http_get", {"url": "file:///etc/passwd"}, CONTEXT)
    malformed = runner.call("http_get", {"url": "http://[::1/"}, CONTEXT)

    assert missing.status is ToolStatus.INVALID_INPUT and "HTTP 404" in missing.content
    assert broken.status is ToolStatus.FAILED and broken.attempts == 3
    assert "HTTP 503" in broken.content
    assert not_http.status is ToolStatus.INVALID_INPUT
    assert "url: Value error, must be an absolute http:// or https:// URL" in not_http.content
    assert malformed.status is ToolStatus.INVALID_INPUT and "not a valid URL" in malformed.content
    assert server.requests == ["/missing", "/broken", "/broken", "/broken"]
