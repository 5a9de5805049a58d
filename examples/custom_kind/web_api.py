"""A custom node kind that calls a web API: `kind: http_json`.

A subtask of this kind renders its prompt as usual; the rendered prompt is the URL it
GETs, and the reply's JSON is its output. A map subtask makes one request per item,
all at once (within the run's limits), and an LLM subtask can then use the answers:

    python examples/custom_kind/web_api.py http://127.0.0.1:8080 EUR USD JPY

runs `PLAN` against an exchange-rate API at that address (`tests/test_custom_kinds.py`
serves one on loopback) with the simulated model, printing each kind event as it
streams and then the output.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
from langgraph.config import get_stream_writer

from fanfold import InvalidOptionsError, KindOutput, SubTask, SubtaskCall, register_node_kind

EVENT = "http_json"
"""The `type` of the custom stream events this kind writes."""


def check_options(subtask: SubTask) -> None:
    """Reject unknown options when the plan is compiled, before any request is sent."""
    unknown = sorted(set(subtask.options) - {"timeout"})
    if unknown:
        raise InvalidOptionsError(
            f"subtask {subtask.id!r}: http_json takes only the option 'timeout', "
            f"not {', '.join(map(repr, unknown))}",
            subtask_id=subtask.id,
            option=unknown[0],
        )


async def http_json(call: SubtaskCall) -> KindOutput:
    """GET the rendered prompt as a URL and return the reply's JSON.

    An error status raises `aiohttp.ClientResponseError`: fanfold retries 408, 409, 429
    and 5xx (and timeouts and dropped connections) up to the subtask's `max_attempts`,
    calling this function again with `call.attempt` counted up; any other status fails
    the subtask at once, and its dependents are skipped.
    """
    url = call.prompt.strip()
    where = {"type": EVENT, "subtask": call.subtask.id, "index": call.index}
    write = get_stream_writer()  # a no-op unless the run streams in "custom" mode
    write({**where, "url": url, "attempt": call.attempt})
    timeout = aiohttp.ClientTimeout(total=float(call.subtask.options.get("timeout", 30)))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, raise_for_status=True) as response:
            data: Any = await response.json()
            write({**where, "status": response.status})
    return KindOutput(data)  # no model, so no token usage


register_node_kind(
    "http_json",
    http_json,
    needs_model=False,
    description="GET the rendered prompt as a URL; the output is the reply's JSON.",
    validate=check_options,
)

PLAN = {
    "task": "Advise a traveller holding {currencies} on what to exchange.",
    "inputs": {
        "api": {"description": "The exchange-rate API's base URL."},
        "currencies": {"description": "Currency codes, a list."},
    },
    "subtasks": [
        {
            "id": "rates",
            "kind": "http_json",
            "map": "currencies",
            "prompt": "{api}/rates/{item}",
            "options": {"timeout": 10},
        },
        {
            "id": "advice",
            "depends_on": ["rates"],
            "prompt": "Using these exchange rates, say which currency to exchange first:\n{rates}",
        },
    ],
}


async def main(api: str, currencies: list[str]) -> dict[str, Any]:
    """Run PLAN against the API at `api`; print the kind's events and the output."""
    from fanfold import compile_plan

    graph = compile_plan(PLAN, model="simulated", max_concurrency=4)
    final: dict[str, Any] = {}
    inputs = {"api": api.rstrip("/"), "currencies": currencies}
    async for mode, chunk in graph.astream({"inputs": inputs}, stream_mode=["custom", "values"]):
        if mode == "custom" and chunk.get("type") == EVENT:
            print(chunk)
        elif mode == "values":
            final = chunk
    print(final["output"])
    return final


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:] or ["EUR", "USD"]))
