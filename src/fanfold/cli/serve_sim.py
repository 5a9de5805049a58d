"""`fanfold serve-sim`: a simulated OpenAI-compatible API on loopback.

Every `SimServerConfig` field has an option: the parameter of the same name. Options left
out (None) keep the config's defaults.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from fanfold.cli._app import CliError, app, one_line_errors

_SHARE = {"metavar": "SHARE", "min": 0.0, "max": 1.0}
_RENAMED = {
    "rate_limit_rps": "--rps",
    "rate_limit_burst": "--burst",
    "rate_limit_concurrency": "--concurrency",
    "error_500_rate": "--error-rate",
    "fail_prompts": "--fail-prompt",
    "finish_prompts": "--finish-prompt",
}


def _option(field: str) -> str:
    return _RENAMED.get(field, "--" + field.replace("_", "-"))


def _pairs(values: list[str] | None, option: str, value_of: Any, *, last: bool) -> dict[str, Any]:
    """``NEEDLE=VALUE`` options as a mapping; split at the last ``=`` or the first."""
    out: dict[str, Any] = {}
    for item in values or []:
        needle, sep, raw = item.rpartition("=") if last else item.partition("=")
        if not sep or not needle:
            raise CliError(f"{option} {item!r}: write it as TEXT=VALUE")
        try:
            out[needle] = value_of(raw)
        except ValueError as exc:
            raise CliError(f"{option} {item!r}: {exc}") from exc
    return out


@app.command("serve-sim")
@one_line_errors
def serve_sim(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port on 127.0.0.1 (0 picks a free one).")
    ] = 8000,
    latency: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.0, help="Seconds per reply.")
    ] = 0.05,
    latency_median: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Lognormal latency with this median instead."),
    ] = None,
    latency_sigma: Annotated[
        float | None, typer.Option(metavar="SIGMA", help="Log-space spread of that latency.")
    ] = None,
    token_delay: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Seconds between streamed content chunks."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Seeds replies, latencies and faults.")
    ] = None,
    rate_limit_rps: Annotated[
        float | None,
        typer.Option("--rps", metavar="RPS", help="Hidden requests-per-second limit (429s)."),
    ] = None,
    rate_limit_burst: Annotated[
        float | None,
        typer.Option("--burst", metavar="N", help="Token bucket size of the --rps limit."),
    ] = None,
    rate_limit_concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", metavar="N", help="Hidden limit on requests in flight."),
    ] = None,
    retry_after_ms: Annotated[
        int | None, typer.Option(metavar="MS", help="Fixed retry-after-ms of the 429s.")
    ] = None,
    retry_after_header: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Send this Retry-After verbatim with the 429s."),
    ] = None,
    retry_after_hints: Annotated[
        bool | None,
        typer.Option(
            "--retry-after-hints/--no-retry-after-hints",
            help="Send retry-after hints with the hidden limits' 429s (default: yes).",
        ),
    ] = None,
    error_500_rate: Annotated[
        float | None,
        typer.Option("--error-rate", "--error-500-rate", **_SHARE, help="Share answered 500."),
    ] = None,
    error_503_rate: Annotated[
        float | None, typer.Option(**_SHARE, help="Share answered 503.")
    ] = None,
    stall_rate: Annotated[
        float | None,
        typer.Option(**_SHARE, help="Share that stalls: no answer, then the socket closes."),
    ] = None,
    stall_seconds: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="How long a stall lasts.")
    ] = None,
    drop_rate: Annotated[
        float | None,
        typer.Option(**_SHARE, help="Share cut off halfway through the reply."),
    ] = None,
    malformed_rate: Annotated[
        float | None, typer.Option(**_SHARE, help="Share answered with broken JSON.")
    ] = None,
    fail_prompts: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-prompt",
            metavar="TEXT=STATUS",
            help="Answer prompts containing TEXT with this HTTP status (repeatable).",
        ),
    ] = None,
    fault_first_attempts_only: Annotated[
        bool | None,
        typer.Option(
            "--fault-first-attempts-only/--fault-every-attempt",
            help="Inject random faults only into each prompt's first request.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            envvar="FANFOLD_SIM_API_KEY",
            show_envvar=True,
            help="Require this bearer key (401 otherwise).",
        ),
    ] = None,
    finish_prompts: Annotated[
        list[str] | None,
        typer.Option(
            "--finish-prompt",
            metavar="TEXT=REASON",
            help="End replies to prompts containing TEXT with this finish_reason, e.g. "
            "CUT=length (repeatable).",
        ),
    ] = None,
    reply_tokens: Annotated[
        int | None, typer.Option(metavar="N", help="Tokens in a plain-text reply.")
    ] = None,
    scripted: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEXT=JSON",
            help="Answer prompts containing TEXT with this JSON value (split at the first "
            "'='; repeatable).",
        ),
    ] = None,
    scripted_form: Annotated[
        str | None,
        typer.Option(metavar="auto|text", help="'text': scripted values as JSON in prose."),
    ] = None,
    rate_limit_headers: Annotated[
        list[str] | None,
        typer.Option(
            "--rate-limit-header",
            metavar="NAME=VALUE",
            help="Answer the hidden limits' 429s with this header instead of the retry-after "
            "ones, e.g. llm_provider-retry-after=60 as LiteLLM does (repeatable).",
        ),
    ] = None,
    reply_headers: Annotated[
        list[str] | None,
        typer.Option(
            "--reply-header",
            metavar="NAME=VALUE",
            help="Add this header to every reply, e.g. x-litellm-response-cost=0.002 "
            "(repeatable).",
        ),
    ] = None,
    plans: Annotated[
        bool | None,
        typer.Option(
            "--plans/--no-plans",
            help="Answer planner requests with valid plans (for `fanfold plan` and --goal).",
        ),
    ] = None,
) -> None:
    """Serve a simulated OpenAI-compatible API on loopback for load-testing plans.

    GET /stats gives requests, answers per status and requests in flight; a summary is
    printed on exit.

    \b
    Examples:
      fanfold serve-sim --port 8000 --rps 20 --concurrency 8 --no-retry-after-hints --plans
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 fanfold run plan.yaml -m openai:sim-model
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 fanfold plan "Brief on a topic" -m openai:sim-model
    """
    given = dict(locals())  # the parameters, named after SimServerConfig's fields
    from pydantic import ValidationError

    from fanfold.testing import SimServer, SimServerConfig

    given["fail_prompts"] = _pairs(fail_prompts, "--fail-prompt", int, last=True)
    given["finish_prompts"] = _pairs(finish_prompts, "--finish-prompt", str, last=True)
    given["scripted"] = _pairs(scripted, "--scripted", json.loads, last=False)
    headers = _pairs(rate_limit_headers, "--rate-limit-header", str, last=False)
    given["rate_limit_headers"] = headers or None
    given["reply_headers"] = _pairs(reply_headers, "--reply-header", str, last=False)
    knobs = {name: given[name] for name in SimServerConfig.model_fields}
    try:
        config = SimServerConfig(**{k: v for k, v in knobs.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{_option(str(e['loc'][0]))}: {e['msg']}"
            if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise CliError(f"serve-sim options: {problems}") from exc
    server = SimServer(config, port=port).start()
    typer.echo(f"serving on {server.base_url} (stats: /stats; Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    finally:
        typer.echo(f"served {server.summary()}", err=True)
