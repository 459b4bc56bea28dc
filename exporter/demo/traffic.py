"""LiteLLM-shaped traffic: requests, the callers that make them, and the models they ask for.

Shapes only: what a proxy's callers send. ``writer`` writes them into a LiteLLM database.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta


def hash_token(key: str) -> str:
    """LiteLLM stores virtual keys as the sha256 hex digest of ``sk-...``."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    api_key: str
    model_group: str
    model: str
    provider: str
    spend: float
    prompt_tokens: int
    completion_tokens: int
    start_time: datetime
    user_id: str | None = None
    team_id: str | None = None
    organization_id: str | None = None
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    success: bool = True
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    duration_ms: int | None = 1200
    endpoint: str | None = "/chat/completions"
    request_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4()}")
    # A failure's HTTP status code (LiteLLM keeps it in the spend log's error information).
    status_code: int = 500
    agent_id: str | None = None
    tools: tuple[str, ...] = ()  # MCP tools the request called
    # (guardrail id, outcome: "passed", "blocked" or "flagged") per guardrail that evaluated it
    guardrails: tuple[tuple[str, str], ...] = ()
    policies: tuple[tuple[str, str], ...] = ()
    prompt_caching_savings: float = 0.0

    @property
    def task_type(self) -> str:
        """As LiteLLM's model-usage rollup reads it: a ``task:NAME`` tag, else uncategorized."""
        return next((t.removeprefix("task:") for t in self.tags if t.startswith("task:")), "uncategorized")


MODELS = (
    # model_group, model, provider, USD per input token, USD per output token
    ("gpt-4o", "gpt-4o-2024-08-06", "openai", 2.5e-6, 1.0e-5),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", 1.5e-7, 6.0e-7),
    ("claude-sonnet", "claude-sonnet-4-20250514", "anthropic", 3.0e-6, 1.5e-5),
    ("gemini-flash", "gemini-2.5-flash", "vertex_ai", 3.0e-7, 2.5e-6),
)


@dataclass(frozen=True)
class Caller:
    api_key: str
    team_id: str | None
    user_id: str | None
    organization_id: str | None


@dataclass(frozen=True)
class World:
    """The entities that generated traffic is spread over."""

    callers: tuple[Caller, ...]
    end_users: tuple[str, ...]
    tags: tuple[str, ...]
    agents: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    guardrails: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()


def random_request(rng: random.Random, world: World, start_time: datetime) -> Request:
    caller = rng.choice(world.callers)
    model_group, model, provider, price_in, price_out = rng.choice(MODELS)
    prompt = rng.randint(1, 4000)
    completion = rng.randint(0, 1500)
    success = rng.random() > 0.05
    cache_read = rng.choice((0, 0, prompt // 2))
    return Request(
        api_key=caller.api_key,
        model_group=model_group,
        model=model,
        provider=provider,
        spend=(prompt * price_in + completion * price_out) if success else 0.0,
        prompt_tokens=prompt,
        completion_tokens=completion if success else 0,
        start_time=start_time,
        user_id=caller.user_id,
        team_id=caller.team_id,
        organization_id=caller.organization_id,
        end_user=rng.choice(world.end_users) if world.end_users and rng.random() < 0.5 else None,
        tags=tuple(t for t in world.tags if rng.random() < 0.3),
        success=success,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=rng.choice((0, 0, 0, prompt // 4)),
        duration_ms=rng.randint(200, 60000),
        endpoint=rng.choice(("/chat/completions", "/chat/completions", "/v1/messages")),
        status_code=rng.choice((429, 429, 500, 400, 503)),
        agent_id=rng.choice(world.agents) if world.agents and rng.random() < 0.2 else None,
        tools=tuple(t for t in world.tools if rng.random() < 0.1),
        guardrails=tuple((g, rng.choice(OUTCOMES)) for g in world.guardrails if rng.random() < 0.5),
        policies=tuple((p, rng.choice(OUTCOMES)) for p in world.policies if rng.random() < 0.3),
        prompt_caching_savings=cache_read * price_in * 0.9,
    )


OUTCOMES = ("passed", "passed", "passed", "blocked", "flagged")
# Requests refused at the proxy's edge (never a spend log): route, HTTP status code.
REJECTIONS = (("/chat/completions", 401), ("/chat/completions", 403), ("/chat/completions", 429), ("/v1/models", 401))


def random_rejections(rng: random.Random, count: int) -> list[tuple[str, int]]:
    return [rng.choice(REJECTIONS) for _ in range(count)]


def random_requests(rng: random.Random, world: World, count: int, start: datetime, end: datetime) -> list[Request]:
    """``count`` requests with start times spread over [start, end)."""
    span = (end - start).total_seconds()
    return [random_request(rng, world, start + timedelta(seconds=rng.random() * span)) for _ in range(count)]
