"""Configuration knobs for the simulated OpenAI-compatible server."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SimServerConfig(BaseModel):
    """Behaviour of a :class:`~fanfold.testing.SimServer`: latency, hidden limits, faults.

    Fault rates are probabilities drawn once per admitted request, in the order 500, 503,
    stall, drop, malformed; their sum must not exceed 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: float = Field(
        default=0.0,
        ge=0.0,
        description="Fixed seconds to wait before answering (non-streamed) or before the "
        "first chunk (streamed). Ignored when latency_median is set.",
    )
    latency_median: float | None = Field(
        default=None,
        gt=0.0,
        description="If set, latency is lognormal with this median (seconds), seeded by seed.",
    )
    latency_sigma: float = Field(
        default=0.5,
        ge=0.0,
        description="Sigma of the lognormal latency (log-space standard deviation).",
    )
    token_delay: float = Field(
        default=0.0, ge=0.0, description="Seconds between streamed content chunks."
    )
    seed: int = Field(
        default=0, description="Seeds reply text, structured values, latency draws and fault draws."
    )
    rate_limit_rps: float | None = Field(
        default=None,
        gt=0.0,
        description="Hidden requests/second limit (token bucket); excess requests get 429 "
        "immediately.",
    )
    rate_limit_burst: float | None = Field(
        default=None,
        ge=1.0,
        description="Token bucket capacity. Default: one second's worth of rate_limit_rps, "
        "clamped to [1, 10], so bursts stay small.",
    )
    rate_limit_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Hidden limit on concurrently admitted requests; excess requests get 429 "
        "immediately.",
    )
    retry_after_ms: int | None = Field(
        default=None,
        ge=1,
        description="Value sent in 429 'retry-after-ms' (and, rounded up to seconds, "
        "'Retry-After'). Default: time until a token is available (rps limit) or the "
        "configured latency (concurrency limit), at least 1 ms.",
    )
    retry_after_header: str | None = Field(
        default=None,
        description="If set, sent verbatim as a 429's 'Retry-After' (with no "
        "'retry-after-ms'), e.g. 'soon', '' or an HTTP date, to probe how clients parse it.",
    )
    retry_after_hints: bool = Field(
        default=True,
        description="Send 'retry-after-ms' and 'Retry-After' with the hidden limits' 429s; "
        "False answers them with no hint, as LiteLLM's max_parallel_requests does.",
    )
    rate_limit_headers: dict[str, str] | None = Field(
        default=None,
        description="If set, the headers of the hidden limits' 429s instead of the "
        "retry-after ones, e.g. {'llm_provider-retry-after': '60'} as LiteLLM answers.",
    )
    reply_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers added to every non-streamed reply, e.g. "
        "{'x-litellm-response-cost': '0.002'} or x-ratelimit-remaining-requests.",
    )
    error_500_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability of answering 500 (after the latency)."
    )
    error_503_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability of answering 503 (after the latency)."
    )
    stall_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Probability of reading the request and then saying nothing for "
        "stall_seconds before closing the connection.",
    )
    stall_seconds: float = Field(default=30.0, ge=0.0, description="Duration of a stall, seconds.")
    drop_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Probability of sending the headers and part of the body, then closing "
        "the socket.",
    )
    malformed_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Probability of answering 200 with a body (or SSE event) that is not "
        "valid JSON.",
    )
    fail_prompts: dict[str, int] = Field(
        default_factory=dict,
        description="If the last user message contains a key, always answer that HTTP status "
        "immediately, e.g. {'BAD': 400}. Checked after the hidden limits.",
    )
    fault_first_attempts_only: bool = Field(
        default=False,
        description="Inject the random faults only on the first request for each prompt "
        "(last user message), so a retry always succeeds.",
    )
    api_key: str | None = Field(
        default=None,
        description="If set, requests without 'Authorization: Bearer <api_key>' get 401.",
    )
    finish_prompts: dict[str, str] = Field(
        default_factory=dict,
        description="If the last user message contains a key, end the reply with that "
        "finish_reason, e.g. {'CUT': 'length'}; 'content_filter' also empties the reply.",
    )
    reply_tokens: int = Field(
        default=12, ge=1, description="Tokens (streamed chunks) in a plain-text reply."
    )
    scripted: dict[str, Any] = Field(
        default_factory=dict,
        description="If the last user message contains a key, the reply carries that JSON "
        "value instead of a sampled one: as the arguments of the tool the request makes it "
        "call, as the content of a json_schema or json_object reply, or else as JSON text "
        "(see scripted_form). Streamed, it comes in pieces of 16 characters, token_delay apart.",
    )
    scripted_form: Literal["auto", "text"] = Field(
        default="auto",
        description="'auto' answers a scripted value in the form the request asks for; "
        "'text' always answers it as JSON in a fenced block with prose around it, as a model "
        "that ignores tools and response formats would.",
    )

    plans: bool = Field(
        default=False,
        description="Answer requests for fanfold's planner schema (the FanfoldPlan tool or "
        "json_schema) with a valid plan for the goal, as the simulated model does, so that "
        "`fanfold plan` and `run --goal` work against the server.",
    )

    @model_validator(mode="after")
    def _check_fault_rates(self) -> SimServerConfig:
        total = (
            self.error_500_rate
            + self.error_503_rate
            + self.stall_rate
            + self.drop_rate
            + self.malformed_rate
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {total}, which is more than 1")
        for status in self.fail_prompts.values():
            if not 100 <= status <= 599:
                raise ValueError(f"fail_prompts status {status} is not an HTTP status code")
        return self

    @property
    def effective_burst(self) -> float:
        """Token bucket capacity in effect (see ``rate_limit_burst``)."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return min(max(self.rate_limit_rps or 1.0, 1.0), 10.0)
