"""The agent registry: YAML definitions validated into typed agents.

Each agent names its role prompt, the tools it may call, the permissions it holds, its model,
its limits and when it escalates to a human. A definition that does not validate is refused
with the file, the agent and the field, so a typo never becomes an agent that silently lacks
a limit. The registry is the packaged ``registry.yaml`` unless the user points at a file or a
folder of them (``AIPLATFORM_AGENTS_REGISTRY``).
"""

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiplatform_dagster.errors import PlatformError

PACKAGED_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"


class RegistryError(PlatformError):
    """A registry file cannot be read or a definition is invalid; the message says where."""


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    HIERARCHICAL = "hierarchical"


class Limits(BaseModel):
    """What one workflow of this agent may spend before it is stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(default=20_000, gt=0, description="Prompt + completion tokens.")
    max_wall_s: float = Field(default=300.0, gt=0, description="Seconds, not counting waits.")
    max_cost_usd: float = Field(
        default=0.50, ge=0, description="USD at the price table; 0: no cost limit."
    )
    max_tool_calls: int = Field(default=20, gt=0, description="Tool calls, refused ones too.")


class Escalation(BaseModel):
    """When a human is asked: before tools with an effect, after a failed validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    approve_tools: tuple[str, ...] = Field(
        default=(), description="Tools that run only after a human approves the call."
    )
    on_validation_failure: bool = Field(
        default=True,
        description="A draft the validator rejects twice goes to a human, not to the user.",
    )


class AgentDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    role: str = Field(min_length=1, description="The system prompt: who the agent is.")
    capabilities: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    model: str | None = Field(default=None, description="Unset: AIPLATFORM_LLM_MODEL.")
    mode: Mode = Mode.SEQUENTIAL
    delegates: tuple[str, ...] = Field(
        default=(), description="Sub-agents a hierarchical coordinator may hand work to."
    )
    limits: Limits = Field(default_factory=Limits)
    escalation: Escalation = Field(default_factory=Escalation)
    source: str = Field(default="", exclude=True, description="The file it came from.")

    @property
    def digest(self) -> str:
        """Content hash of what shapes a run; a thread pins it with the graph version."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    agents: list[dict]


@dataclass(frozen=True)
class RegistryProblem:
    """A definition that loads but cannot run as written (the asset check reports these)."""

    agent: str
    source: str
    problem: str


@dataclass(frozen=True)
class AgentRegistry:
    agents: Mapping[str, AgentDefinition]
    sources: tuple[str, ...]

    def __iter__(self) -> Iterator[AgentDefinition]:
        return iter(self.agents.values())

    def get(self, name: str) -> AgentDefinition:
        try:
            return self.agents[name]
        except KeyError:
            raise RegistryError(
                f"no agent named {name!r}; the registry ({', '.join(self.sources)}) has "
                f"{sorted(self.agents)} (`aiplatform agent list` shows them)"
            ) from None

    def default_for(self, mode: Mode | None) -> AgentDefinition:
        """The first agent whose own mode is ``mode`` (the first agent when no mode is given)."""
        for agent in self.agents.values():
            if mode is None or agent.mode == mode:
                return agent
        raise RegistryError(f"no agent in the registry runs in {mode} mode; name one with --agent")

    def problems(self, tool_permissions: Mapping[str, str]) -> list[RegistryProblem]:
        """Tools that do not exist, tools the agent's permissions forbid, unknown delegates."""
        found = []
        for agent in self:

            def report(problem: str, agent: AgentDefinition = agent) -> None:
                found.append(RegistryProblem(agent.name, agent.source, problem))

            for tool in agent.tools:
                if tool not in tool_permissions:
                    report(f"names unknown tool {tool!r} (known: {sorted(tool_permissions)})")
                elif tool_permissions[tool] not in agent.permissions:
                    report(
                        f"lists tool {tool!r}, which needs permission "
                        f"{tool_permissions[tool]!r} that the agent does not hold"
                    )
            for tool in agent.escalation.approve_tools:
                if tool not in agent.tools:
                    report(f"asks approval for {tool!r}, which is not among its tools")
            for delegate in agent.delegates:
                if delegate not in self.agents:
                    report(f"delegates to unknown agent {delegate!r}")
                elif delegate == agent.name:
                    report("delegates to itself")
            if agent.mode == Mode.HIERARCHICAL and not agent.delegates:
                report("runs hierarchically but names no delegates")
        return found


def load_registry(path: Path | None = None) -> AgentRegistry:
    """The agents in ``path`` (a YAML file, or every *.yaml/*.yml in a folder), or the packaged
    registry. Raises RegistryError naming the file, the agent and the field."""
    path = path or PACKAGED_REGISTRY
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise RegistryError(f"agent registry folder {path} holds no *.yaml files")
    elif path.is_file():
        files = [path]
    else:
        raise RegistryError(
            f"agent registry {path} does not exist: set AIPLATFORM_AGENTS_REGISTRY to a YAML "
            "file or a folder of them, or unset it for the packaged registry"
        )
    agents: dict[str, AgentDefinition] = {}
    for file in files:
        for agent in _read_file(file):
            if agent.name in agents:
                raise RegistryError(
                    f"{file}: agent {agent.name!r} is already defined in "
                    f"{agents[agent.name].source}; agent names must be unique"
                )
            agents[agent.name] = agent
    if not agents:
        raise RegistryError(f"agent registry {path} defines no agents")
    return AgentRegistry(agents, tuple(str(file) for file in files))


def _read_file(file: Path) -> list[AgentDefinition]:
    try:
        raw = yaml.safe_load(file.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise RegistryError(f"{file}: not readable YAML ({error})") from None
    try:
        document = _RegistryFile.model_validate(raw)
    except ValidationError as error:
        raise RegistryError(
            f"{file}: expected `version: 1` and a list `agents:`; {_fields(error)}"
        ) from None
    definitions = []
    for position, entry in enumerate(document.agents, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"agent {name!r}" if name else f"agent #{position}"
        try:
            definitions.append(AgentDefinition.model_validate({**entry, "source": str(file)}))
        except (ValidationError, TypeError) as error:
            detail = _fields(error) if isinstance(error, ValidationError) else "not a mapping"
            raise RegistryError(f"{file}: {label}: {detail}") from None
    return definitions


def _fields(error: ValidationError) -> str:
    """One clause per problem: ``field limits.max_tokens: Input should be greater than 0``."""
    return "; ".join(
        f"field {'.'.join(str(part) for part in item['loc']) or '(top)'}: {item['msg']}"
        for item in error.errors()
    )
