"""`fanfold serve-sim`: a simulated OpenAI-compatible API on loopback."""

from __future__ import annotations

from typing import Annotated

import typer

from fanfold.cli._app import app, one_line_errors


@app.command("serve-sim")
@one_line_errors
def serve_sim(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port on 127.0.0.1 (0 picks a free one).")
    ] = 8000,
    latency: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds per reply.")] = 0.05,
    rps: Annotated[
        float | None, typer.Option(metavar="RPS", help="Hidden requests-per-second limit.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(metavar="N", help="Hidden concurrent-request limit.")
    ] = None,
    error_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests answered 500.")
    ] = 0.0,
) -> None:
    """Serve a simulated OpenAI-compatible API on loopback for load-testing plans.

    \b
    Examples:
      fanfold serve-sim --port 8000 --rps 20
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 fanfold run plan.yaml -m openai:sim-model
    """
    from fanfold.testing import SimServer, SimServerConfig

    config = SimServerConfig(
        latency=latency,
        rate_limit_rps=rps,
        rate_limit_concurrency=concurrency,
        error_500_rate=error_rate,
    )
    server = SimServer(config, port=port).start()
    typer.echo(f"serving on {server.base_url} (Ctrl-C to stop)", err=True)
    server.serve_forever()
