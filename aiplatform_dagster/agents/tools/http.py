"""``http_get``: fetch a page from an allow-listed host, bounded in size and time.

An agent that can fetch any URL can reach internal services and leak what it read, so only
hosts listed in AIPLATFORM_AGENTS_HTTP_ALLOWED_HOSTS are fetched. The host is checked before
each request, redirects included: they are followed by hand (at most ``MAX_REDIRECTS``), so a
listed host cannot bounce the agent to an unlisted one. The body is streamed and cut at
AIPLATFORM_AGENTS_HTTP_MAX_BYTES, and the whole fetch has a deadline, so a huge or slow-drip
response cannot hold the agent.
"""

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiplatform_dagster.agents.tools.base import (
    ToolContext,
    ToolError,
    ToolInputError,
    ToolRefused,
    ToolSpec,
    TransientToolError,
)
from aiplatform_dagster.config import AgentSettings, Settings

NAME = "http_get"
PERMISSION = "web:read"
HOSTS_VARIABLE = AgentSettings.variable("http_allowed_hosts")
MAX_REDIRECTS = 3
REQUEST_TIMEOUT_S = 10.0
USER_AGENT = "aiplatform-agent/1"
TEXT_TYPES = ("text/", "json", "xml", "javascript", "yaml", "csv")
"""Content types shown to the model; other bodies are described, not shown."""


class HttpGetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        max_length=2_000, description="An http:// or https:// URL on an allow-listed host."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("must be an absolute http:// or https:// URL")
        return url


def allowed_hosts(setting: str) -> frozenset[str]:
    """The comma-separated host names of the setting, lower-cased."""
    return frozenset(host.strip().lower() for host in setting.split(",") if host.strip())


def fetch(
    url: str, allowed: frozenset[str], max_bytes: int, timeout_s: float = REQUEST_TIMEOUT_S
) -> dict[str, Any]:
    """GET ``url``, following redirects among allowed hosts; the first ``max_bytes`` of it."""
    import httpx

    if not allowed:
        raise ToolRefused(
            f"http_get may fetch from no host: list the hosts agents may read in {HOSTS_VARIABLE}"
        )
    deadline = time.monotonic() + timeout_s
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ToolInputError(f"{url!r} is not a valid URL: {error}") from None
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout_s) as client:
            for _ in range(MAX_REDIRECTS + 1):
                _check_host(target, allowed)
                with client.stream("GET", target, headers={"User-Agent": USER_AGENT}) as response:
                    if response.is_redirect:
                        target = response.url.join(response.headers["location"])
                        continue
                    _check_status(response)
                    return _read(response, max_bytes, deadline, timeout_s)
    except httpx.TimeoutException:
        raise TransientToolError(f"{target} did not answer within {timeout_s:g} s") from None
    except httpx.TransportError as error:
        raise TransientToolError(f"{target} could not be reached: {error}") from None
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise ToolError(f"fetching {target} failed: {error}") from None
    raise ToolError(f"{url} redirected more than {MAX_REDIRECTS} times; not followed further")


def _check_host(url: Any, allowed: frozenset[str]) -> None:
    if url.scheme not in ("http", "https"):
        raise ToolRefused(f"{url} is not an http(s) URL")
    if url.host.lower() not in allowed:
        raise ToolRefused(
            f"host {url.host!r} is not allow-listed (allowed: {sorted(allowed)}), so {url} was "
            f"not fetched. An operator can add the host to {HOSTS_VARIABLE}"
        )


def _check_status(response: Any) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientToolError(f"{response.url} answered HTTP {status}")
    if status >= 400:
        raise ToolInputError(f"{response.url} answered HTTP {status}: check the URL")


def _read(response: Any, max_bytes: int, deadline: float, timeout_s: float) -> dict[str, Any]:
    """The body up to ``max_bytes``, read before ``deadline``."""
    body = bytearray()
    truncated = False
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise TransientToolError(f"{response.url} sent its body for more than {timeout_s:g} s")
        body.extend(chunk)
        if len(body) > max_bytes:
            del body[max_bytes:]
            truncated = True
            break
    content_type = response.headers.get("content-type", "")
    is_text = not content_type or any(kind in content_type.lower() for kind in TEXT_TYPES)
    return {
        "url": str(response.url),
        "status": response.status_code,
        "content_type": content_type,
        "bytes": len(body),
        "truncated": truncated,
        "text": bytes(body).decode(response.encoding or "utf-8", errors="replace")
        if is_text
        else None,
    }


def format_page(page: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cut = f", truncated at {page['bytes']} bytes" if page["truncated"] else ""
    header = (
        f"{page['url']} (HTTP {page['status']}, {page['content_type'] or 'no content type'}, "
        f"{page['bytes']} bytes{cut})"
    )
    if page["text"] is None:
        return f"{header}: binary content, not shown", page
    return f"{header}\n\n{page['text']}", page


def http_get_tool(settings: Settings, timeout_s: float = REQUEST_TIMEOUT_S) -> ToolSpec:
    agents = settings.agents
    allowed = allowed_hosts(agents.http_allowed_hosts)

    def run(arguments: HttpGetInput, context: ToolContext) -> dict[str, Any]:
        return fetch(arguments.url, allowed, agents.http_max_bytes, timeout_s)

    hosts = ", ".join(sorted(allowed)) or "none configured"
    return ToolSpec(
        name=NAME,
        description=f"GET a web page or API response from an allow-listed host ({hosts}).",
        permission=PERMISSION,
        input_model=HttpGetInput,
        run=run,
        parse_output=format_page,
        timeout_s=timeout_s + 1.0,  # the fetch's own deadline ends it first, with a clearer error
    )
