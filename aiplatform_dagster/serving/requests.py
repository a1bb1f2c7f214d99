"""The request bodies the API accepts: unknown fields refused, every length bounded."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.threads import Decision


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, description="The question, in plain language.")
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(
        default=None, description="Force a search mode (default: the router decides)."
    )
    top_n: int | None = Field(default=None, ge=1, le=20, description="Sources to answer from.")
    use_cache: bool = True


class AgentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request: str = Field(min_length=1, description="What the agents should do.")
    agent: str | None = Field(default=None, description="Agent from the registry.")
    mode: Literal["sequential", "parallel", "hierarchical"] | None = None
    subtasks: list[str] = Field(default_factory=list, max_length=8)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="From the answer.")
    rating: int = Field(ge=1, le=5, description="1: wrong or harmful ... 5: right, well sourced.")
    labeller: str = Field(min_length=1, max_length=100)
    corrected_answer: str | None = Field(
        default=None, max_length=20_000, description="What the answer should have been."
    )
    critical: bool = Field(
        default=False, description="Needs a labeller's look, whatever the rating."
    )
    note: str = Field(default="", max_length=2_000)
    question: str | None = Field(
        default=None,
        max_length=20_000,
        description="The question asked; needed unless the API flagged that answer itself.",
    )


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Decision
    note: str = Field(default="", max_length=2_000)
