"""`parallel_process`: the Parallelization pattern's entry point and return shape."""

from __future__ import annotations

from dataclasses import dataclass, field

from fanfold import PlanError, SubTask, SubtaskResult, UnknownDependencyError, parallel_process


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
    assert [r.task_id for r in result["results"]] == ["market", "rivals", "pitch"]
    assert all(isinstance(r, SubtaskResult) for r in result["results"])
    assert result["results"][0].result == "echo: [market] size the market"
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
    assert result["results"][1].output == "Title\necho: [facts] gather"
    assert [c.node for c in echo.calls] == ["facts", "aggregate"]


async def test_pattern_counts_failed_and_skipped_subtasks(echo_factory):
    model = echo_factory(fail_on=("[market]",))
    result = await parallel_process("Launch a product", pattern_subtasks(), model=model)
    metadata = result["metadata"]
    assert metadata["total_tasks"] == 3
    assert metadata["successful_tasks"] == 1
    assert metadata["failed_tasks"] == 1
    assert metadata["skipped_tasks"] == 1
    assert [r.status for r in result["results"]] == ["failed", "succeeded", "skipped"]


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
    assert [r.output for r in result["results"]] == ["echo: [a] x", "echo: [b] y"]


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
    market, rivals, pitch = result["results"]
    assert rivals.metadata["type"] == "research"
    assert rivals.metadata["tokens"] == rivals.usage.total_tokens > 0
    assert "error" not in rivals.metadata
    assert market.metadata["type"] == "analysis"
    assert "scripted failure" in market.metadata["error"]
    assert pitch.metadata["error"] == "dependency 'market' failed"
    # The pattern counts a result as successful when its metadata has no error.
    successful = len([r for r in result["results"] if "error" not in r.metadata])
    assert successful == result["metadata"]["successful_tasks"] == 1
