"""`parallel_process`: the Parallelization pattern's entry point and return shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel

from fanfold import (
    MissingInputError,
    PlanError,
    SubTask,
    UnknownDependencyError,
    parallel_process,
)


@dataclass
class PatternSubTask:
    """The pattern's own dataclass: `type` is a free label, not a node kind."""

    id: str
    content: str
    type: str
    dependencies: list[str] = field(default_factory=list)


def pattern_subtasks() -> list[PatternSubTask]:
    return [
        PatternSubTask("market", "[market] size the market", "analysis"),
        PatternSubTask("rivals", "[rivals] list rivals", "research"),
        PatternSubTask("pitch", "[pitch] write the pitch", "writing", ["market", "rivals"]),
    ]


def words(text: str) -> int:
    return len(text.split())


async def test_parallel_process_returns_the_pattern_shape(echo):
    result = await parallel_process("Launch a product", pattern_subtasks(), model=echo)
    assert set(result) == {"output", "results", "metadata"}
    assert result["output"] == echo.call_for("aggregate").reply
    assert [r["task_id"] for r in result["results"]] == ["market", "rivals", "pitch"]
    assert all(set(r) == {"task_id", "result", "metadata"} for r in result["results"])
    assert result["results"][0]["result"] == "echo: [market] size the market"
    metadata = result["metadata"]
    assert metadata["total_tasks"] == 3
    assert metadata["successful_tasks"] == 3
    expected_tokens = sum(
        sum(words(str(m.content)) for m in call.messages) + words(call.reply) for call in echo.calls
    )
    assert metadata["total_tokens"] == expected_tokens


async def test_pattern_type_label_becomes_the_system_prompt(echo):
    await parallel_process("Launch a product", pattern_subtasks(), model=echo)
    assert echo.call_for("market").system == "Process this analysis task."
    assert echo.call_for("rivals").system == "Process this research task."
    assert echo.call_for("pitch").system == "Process this writing task."


async def test_pattern_dependencies_reach_the_dependent_prompt(echo):
    await parallel_process("Launch a product", pattern_subtasks(), model=echo)
    prompt = echo.call_for("pitch").human
    assert "### market\necho: [market] size the market" in prompt
    assert "### rivals\necho: [rivals] list rivals" in prompt


async def test_pattern_type_that_names_a_registered_kind_is_used_as_the_kind(echo):
    subtasks = [
        PatternSubTask("facts", "[facts] gather", "analysis"),
        PatternSubTask("layout", "Title\n{facts}", "template", ["facts"]),
    ]
    result = await parallel_process("t", subtasks, model=echo)
    assert result["results"][1]["result"] == "Title\necho: [facts] gather"
    assert [c.node for c in echo.calls] == ["facts", "aggregate"]


async def test_pattern_counts_failed_and_skipped_subtasks(echo_factory):
    model = echo_factory(fail_on=("[market]",))
    result = await parallel_process("Launch a product", pattern_subtasks(), model=model)
    metadata = result["metadata"]
    assert metadata["total_tasks"] == 3
    assert metadata["successful_tasks"] == 1
    assert metadata["failed_tasks"] == 1
    assert metadata["skipped_tasks"] == 1
    statuses = [r["metadata"]["status"] for r in result["results"]]
    assert statuses == ["failed", "succeeded", "skipped"]


async def test_pattern_max_concurrent_limits_calls_in_flight(echo_factory):
    model = echo_factory(latency=0.02)
    subtasks = [PatternSubTask(f"s{i}", f"[s{i}] work", "analysis") for i in range(6)]
    result = await parallel_process("t", subtasks, model=model, max_concurrent=2)
    assert result["metadata"]["successful_tasks"] == 6
    assert model.max_in_flight == 2


async def test_pattern_accepts_mappings_and_subtasks(echo):
    subtasks = [
        {"id": "a", "content": "[a] x", "type": "analysis"},
        SubTask(id="b", prompt="[b] y", depends_on=["a"]),
    ]
    result = await parallel_process("t", subtasks, model=echo)
    assert [r["result"] for r in result["results"]] == ["echo: [a] x", "echo: [b] y"]


async def test_pattern_returns_the_error_shape_for_an_invalid_plan_before_any_call(echo):
    subtasks = [PatternSubTask("a", "[a] x", "analysis", ["missing"])]
    result = await parallel_process("Plan badly", subtasks, model=echo)
    assert set(result) == {"error", "metadata"}
    assert "unknown subtask 'missing'" in result["error"]
    assert result["metadata"] == {
        "task_description": "Plan badly",
        "total_tasks": 1,
        "error_type": UnknownDependencyError.__name__,
    }
    assert echo.calls == []


async def test_pattern_without_a_model_returns_the_credentials_error():
    result = await parallel_process("t", pattern_subtasks())
    assert "OPENAI_API_KEY" in result["error"]
    assert result["metadata"]["total_tasks"] == 3
    assert issubclass(PlanError, ValueError)


async def test_pattern_results_carry_the_pattern_metadata(echo_factory):
    model = echo_factory(fail_on=("[market]",))
    result = await parallel_process("Launch a product", pattern_subtasks(), model=model)
    market, rivals, pitch = (r["metadata"] for r in result["results"])
    assert rivals["type"] == "research"
    rivals_call = model.call_for("rivals")
    prompt_words = sum(words(str(m.content)) for m in rivals_call.messages)
    assert rivals["tokens"] == prompt_words + words(rivals_call.reply)
    assert "error" not in rivals
    assert market["type"] == "analysis"
    assert "scripted failure" in market["error"]
    assert pitch["error"] == "dependency 'market' failed"
    # The pattern counts a result as successful when its metadata has no error.
    successful = len([r for r in result["results"] if "error" not in r["metadata"]])
    assert successful == result["metadata"]["successful_tasks"] == 1


async def test_pattern_output_survives_a_json_round_trip(echo_factory):
    model = echo_factory(fail_on=("[market]",))
    result = await parallel_process("Launch a product", pattern_subtasks(), model=model)
    assert json.loads(json.dumps(result)) == result
    assert json.loads(json.dumps(result["results"][2]))["metadata"]["status"] == "skipped"


class Rival(BaseModel):
    name: str
    share: float


async def test_pattern_structured_output_is_returned_as_plain_json_data():
    subtasks = [SubTask(id="rival", prompt="Name the main rival.", output_schema=Rival)]
    result = await parallel_process("t", subtasks, model="simulated")
    rival = result["results"][0]["result"]
    assert type(rival) is dict
    assert Rival.model_validate(rival).model_dump() == rival
    assert json.loads(json.dumps(result)) == result


async def test_pattern_inputs_fill_the_task_and_subtask_placeholders(echo):
    subtasks = [PatternSubTask("market", "[market] size the {product} market", "analysis")]
    result = await parallel_process(
        "Launch {product}", subtasks, model=echo, inputs={"product": "home batteries"}
    )
    assert result["results"][0]["result"] == "echo: [market] size the home batteries market"
    assert "Launch home batteries" in echo.call_for("aggregate").human


async def test_pattern_missing_input_error_names_the_inputs_argument(echo):
    subtasks = [PatternSubTask("market", "[market] size the {product} market", "analysis")]
    result = await parallel_process("t", subtasks, model=echo)
    assert result["metadata"]["error_type"] == MissingInputError.__name__
    assert 'pass it as inputs={"product": ...}' in result["error"]
    assert "--input" not in result["error"]
    assert echo.calls == []
