"""The planner: structured plans from a chat model, retries with the PlanError, JSON text
for models without tool calling, the simulated planner, and plan YAML."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from fanfold import (
    DependencyCycleError,
    InputSpec,
    InvalidSubtaskIdError,
    PlanError,
    PlanValidationError,
    SimulatedChatModel,
    SubTask,
    TaskPlan,
    UndeclaredDependencyError,
    UnknownDependencyError,
    compile_plan,
)
from fanfold._text import message_text
from fanfold.planning import (
    PlannerError,
    amake_plan,
    amake_plan_with_usage,
    make_plan,
    make_plan_with_usage,
    plan_to_yaml,
)
from fanfold.planning.planner import extract_json

SIMULATED_MARK = "[simulated plan]"
GOAL = "Choose a laptop for a video editor"


# -- a scripted fake -----------------------------------------------------------------------


@dataclass
class Request:
    """One call the scripted model received."""

    messages: list[BaseMessage]
    tools: list[str]

    @property
    def human(self) -> str:
        """Text of the last human message."""
        return next(message_text(m) for m in reversed(self.messages) if m.type == "human")


class ScriptedChatModel(BaseChatModel):
    """Answers with queued replies in order and records every request.

    A dict reply is a call of the bound tool with those arguments; a str reply is text.
    With `tool_calling=False`, `bind_tools` raises NotImplementedError.
    """

    script: list[Any]
    tool_calling: bool = True
    _requests: list[Request] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def requests(self) -> list[Request]:
        return list(self._requests)

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        if not self.tool_calling:
            raise NotImplementedError("no tool calling")
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = [t["function"]["name"] for t in kwargs.get("tools") or []]
        index = len(self._requests)
        self._requests.append(Request(list(messages), tools))
        assert index < len(self.script), f"script exhausted after {index} replies"
        reply = self.script[index]
        usage = {"input_tokens": 100 + index, "output_tokens": 10, "total_tokens": 110 + index}
        if isinstance(reply, dict):
            assert tools, "a tool-call reply was scripted but no tool is bound"
            call = tool_call(name=tools[0], args=copy.deepcopy(reply), id=f"call_{index}")
            message = AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        else:
            message = AIMessage(content=reply, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def sub(sid: str, prompt: str, depends_on: list[str] | None = None, **extra: Any) -> dict:
    return {"id": sid, "prompt": prompt, "depends_on": depends_on or [], **extra}


VALID = {
    "task": "Pick a laptop for video editing",
    "subtasks": [
        sub("specs", "List the specs that matter for 4K video editing."),
        sub("prices", "List current prices of three suitable laptops."),
        sub("verdict", "Given {specs} and {prices}, recommend one laptop.", ["specs", "prices"]),
    ],
}


def with_subtasks(*subtasks: dict) -> dict:
    return {"task": VALID["task"], "subtasks": list(subtasks)}


def plan_error(data: dict) -> str:
    """The message TaskPlan validation gives for `data`."""
    with pytest.raises(PlanError) as caught:
        TaskPlan.model_validate(data)
    return str(caught.value)


# -- the simulated planner -----------------------------------------------------------------


def test_simulated_planner_returns_a_marked_plan_that_compiles_and_runs() -> None:
    plan = make_plan(GOAL, model="simulated")
    assert plan.task == f"{SIMULATED_MARK} {GOAL}"
    assert all(s.prompt.startswith(SIMULATED_MARK) for s in plan.subtasks)
    *aspects, final = plan.subtasks
    assert 3 <= len(aspects) <= 4
    assert all(not s.depends_on and GOAL in s.prompt for s in aspects)
    assert final.depends_on == [s.id for s in aspects]
    assert final.placeholders == final.depends_on
    assert plan.required_inputs() == {}

    state = compile_plan(plan, model="simulated").invoke({"inputs": {}})
    assert {sid: r.status for sid, r in state["results"].items()} == dict.fromkeys(
        plan.ids, "succeeded"
    )
    assert state["output"]


def test_simulated_planner_is_deterministic_per_goal_and_keeps_braces_literal() -> None:
    goal = "Price {the} new plan, keep {{x}} as is"
    plan = make_plan(goal, model=SimulatedChatModel(latency=0))
    assert plan == make_plan(goal, model=SimulatedChatModel(latency=0))
    assert plan != make_plan(GOAL, model=SimulatedChatModel(latency=0))
    # Braces in the goal are literal text, never run inputs.
    assert plan.required_inputs() == {}
    state = compile_plan(plan, model=SimulatedChatModel(latency=0)).invoke({"inputs": {}})
    assert all(r.ok for r in state["results"].values())


@pytest.mark.parametrize(("limit", "count"), [(1, 1), (2, 2), (3, 3)])
def test_simulated_planner_stays_within_max_subtasks(limit: int, count: int) -> None:
    plan = make_plan(GOAL, model=SimulatedChatModel(latency=0), max_subtasks=limit)
    assert len(plan.subtasks) == count
    assert plan.task.startswith(SIMULATED_MARK)


@pytest.mark.parametrize("limit", [1, 5])
def test_simulated_planner_declares_and_uses_every_offered_input(limit: int) -> None:
    offered = {"product": "The product to brief on.", "audience": "Who reads it."}
    model = SimulatedChatModel(latency=0)
    plan = make_plan(GOAL, model=model, inputs=offered, max_subtasks=limit)
    assert {name: spec.description for name, spec in plan.inputs.items()} == offered
    assert set(plan.required_inputs()) == {"product", "audience"}
    assert "audience" not in plan.ids  # an aspect id never shadows an offered input
    state = compile_plan(plan, model=model).invoke(
        {"inputs": {"product": "home batteries", "audience": "installers"}}
    )
    assert all(r.ok for r in state["results"].values())


async def test_async_simulated_planner_gives_the_sync_plan() -> None:
    model = SimulatedChatModel(latency=0)
    assert await amake_plan(GOAL, model=model) == make_plan(GOAL, model=model)


def test_simulated_model_samples_other_tools_as_before() -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        answer: str

    verdict: Any = SimulatedChatModel(latency=0).with_structured_output(Verdict).invoke("ok?")
    assert isinstance(verdict, Verdict) and SIMULATED_MARK not in verdict.answer


# -- retries -------------------------------------------------------------------------------

INVALID_REPLIES = {
    "unknown dependency": (
        with_subtasks(sub("specs", "List specs."), sub("verdict", "Pick.", ["pricing"])),
        UnknownDependencyError,
    ),
    "cycle": (
        with_subtasks(sub("a", "Do a.", ["b"]), sub("b", "Do b.", ["a"])),
        DependencyCycleError,
    ),
    "undeclared placeholder": (
        with_subtasks(sub("specs", "List specs."), sub("verdict", "Use {specs}.")),
        UndeclaredDependencyError,
    ),
    "reserved id": (with_subtasks(sub("output", "Write it.")), InvalidSubtaskIdError),
}


@pytest.mark.parametrize("case", list(INVALID_REPLIES))
def test_invalid_first_plan_is_retried_quoting_its_plan_error(case: str) -> None:
    invalid, error_type = INVALID_REPLIES[case]
    message = plan_error(invalid)
    model = ScriptedChatModel(script=[invalid, VALID])

    plan = make_plan(GOAL, model=model)

    assert plan == TaskPlan.model_validate(VALID)
    first, second = model.requests
    assert first.tools == second.tools == ["FanfoldPlan"]
    assert message in second.human
    # The conversation goes on: the rejected tool call, its answer, then the follow-up.
    rejected, answer = second.messages[2], second.messages[3]
    assert isinstance(rejected, AIMessage) and rejected.tool_calls[0]["args"] == invalid
    assert answer.type == "tool" and message in message_text(answer)
    assert getattr(answer, "tool_call_id", None) == rejected.tool_calls[0]["id"]
    assert second.messages[:2] == first.messages
    with pytest.raises(error_type):
        TaskPlan.model_validate(invalid)


PLANNER_REJECTS = {
    "placeholder naming nothing": (
        with_subtasks(sub("specs", "List specs."), sub("verdict", "Use {spec}.", ["specs"])),
        ["uses {spec}, which is neither a subtask id nor a run input; did you mean 'specs'?"],
    ),
    # TaskPlan itself may catch these two as well; either way the reply is retried.
    "item without map": (
        with_subtasks(sub("each", "Review {item}.")),
        ["'each'", "{item}", "has no map"],
    ),
    "map over nothing": (
        with_subtasks(sub("each", "Review {item}.", map="chapters")),
        ["'each'", "'chapters'"],
    ),
    "field outside the schema": (
        with_subtasks(sub("specs", "List specs.", kind="template")),
        ["subtasks.0.kind: Extra inputs are not permitted"],
    ),
    "too many subtasks": (
        with_subtasks(*(sub(f"s{i}", f"Do {i}.") for i in range(4))),
        ["the plan has 4 subtasks, more than the limit of 3"],
    ),
}


@pytest.mark.parametrize("case", list(PLANNER_REJECTS))
def test_planner_checks_beyond_taskplan_reject_and_retry(case: str) -> None:
    invalid, fragments = PLANNER_REJECTS[case]
    model = ScriptedChatModel(script=[invalid, VALID])
    plan = make_plan(GOAL, model=model, max_subtasks=3)
    assert plan == TaskPlan.model_validate(VALID)
    assert len(model.requests) == 2
    rejected = model.requests[1].human.split("\n\n")[0]
    assert all(fragment in rejected for fragment in fragments), rejected


@pytest.mark.parametrize("attempts", [1, 3])
def test_all_attempts_invalid_raises_the_plan_error_after_exactly_attempts_calls(
    attempts: int,
) -> None:
    cycle = INVALID_REPLIES["cycle"][0]
    model = ScriptedChatModel(script=[cycle] * 5)

    with pytest.raises(PlannerError) as caught:
        make_plan(GOAL, model=model, attempts=attempts)

    assert len(model.requests) == attempts
    error = caught.value
    assert isinstance(error, PlanError)
    assert error.attempts == attempts
    assert isinstance(error.last_error, DependencyCycleError)
    assert str(error.last_error) == plan_error(cycle)
    assert str(error.last_error) in str(error) and f"after {attempts} attempt" in str(error)


async def test_async_planner_retries_like_the_sync_one() -> None:
    invalid = INVALID_REPLIES["unknown dependency"][0]
    model = ScriptedChatModel(script=[invalid, VALID])
    plan, usage = await amake_plan_with_usage(GOAL, model=model)
    assert plan == TaskPlan.model_validate(VALID)
    assert plan_error(invalid) in model.requests[1].human
    assert usage.input_tokens == 100 + 101


def test_usage_counts_every_planner_call() -> None:
    model = ScriptedChatModel(script=[INVALID_REPLIES["cycle"][0], VALID])
    plan, usage = make_plan_with_usage(GOAL, model=model)
    assert plan == TaskPlan.model_validate(VALID)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (201, 20, 221)


# -- JSON in the reply text ----------------------------------------------------------------


def test_model_without_tool_calling_is_asked_for_json_and_its_fenced_reply_parsed(
    echo_factory: Callable[..., Any],
) -> None:
    reply = f"Here is the plan:\n```json\n{json.dumps(VALID, indent=2)}\n```\nGood luck!"
    # EchoChatModel (tests/conftest.py) has no tool calling.
    echo = echo_factory(replies={"Plan this goal": reply})

    plan = make_plan(GOAL, model=echo)

    assert plan == TaskPlan.model_validate(VALID)
    assert len(echo.calls) == 1
    assert "Answer with the plan as one JSON object" in echo.calls[0].human


def test_text_mode_retry_asks_again_for_json() -> None:
    model = ScriptedChatModel(
        tool_calling=False,
        script=["I would research first.", f"Sure! {json.dumps(VALID)} Hope this helps."],
    )
    plan = make_plan(GOAL, model=model)
    assert plan == TaskPlan.model_validate(VALID)
    first, second = model.requests
    assert first.tools == second.tools == []
    assert "the reply holds no JSON object" in second.human
    assert "Answer with the plan as one JSON object" in second.human


def test_reply_without_tool_call_switches_to_json_text() -> None:
    model = ScriptedChatModel(
        script=["Let me think about laptops.", f"```\n{json.dumps(VALID)}```"]
    )
    plan = make_plan(GOAL, model=model)
    assert plan == TaskPlan.model_validate(VALID)
    first, second = model.requests
    assert first.tools == ["FanfoldPlan"] and second.tools == []
    assert "Answer with the plan as one JSON object" in second.human
    assert "Answer with the plan as one JSON object" not in first.human


def test_json_text_instead_of_a_tool_call_is_used_at_once() -> None:
    model = ScriptedChatModel(script=[json.dumps(VALID)])
    assert make_plan(GOAL, model=model) == TaskPlan.model_validate(VALID)
    assert len(model.requests) == 1


def test_extract_json_prefers_the_plan_over_other_objects_and_unwraps_it() -> None:
    text = 'An example: {"note": 1}. The plan: ' + json.dumps(VALID) + " done."
    assert extract_json(text) == VALID
    assert extract_json(json.dumps({"plan": VALID})) == VALID
    with pytest.raises(PlanValidationError, match="no JSON object"):
        extract_json("no braces { here")
    broken = json.dumps(VALID)[:-2] + ",}"
    with pytest.raises(PlanValidationError, match="the reply's JSON is not valid"):
        extract_json(f"```json\n{broken}\n```")


# -- the request ---------------------------------------------------------------------------


def test_request_lists_the_inputs_and_the_plan_declares_those_it_uses() -> None:
    inputs = {
        "report": "The quarterly report text",
        "regions": "A list of sales regions",
        "unused": "Not needed",
    }
    reply = with_subtasks(
        sub("summary", "Summarise {report}."),
        sub("per_region", "How did {item} do, per {report}?", map="regions"),
    )
    model = ScriptedChatModel(script=[reply])

    plan = make_plan(GOAL, model=model, inputs=inputs, max_subtasks=5)

    request = model.requests[0].human
    for name, description in inputs.items():
        assert f"{{{name}}}: {description}" in request
    assert "Use at most 5 subtasks." in request
    assert f"<goal>\n{GOAL}\n</goal>" in request
    assert plan.inputs == {
        "report": InputSpec(description="The quarterly report text"),
        "regions": InputSpec(description="A list of sales regions"),
    }
    assert plan.subtask("per_region").map == "regions"


def test_request_without_inputs_says_so_and_steers_towards_parallel_subtasks() -> None:
    model = ScriptedChatModel(script=[VALID])
    make_plan(GOAL, model=model)
    system, human = model.requests[0].messages
    assert "There are no run inputs" in message_text(human)
    assert "run in parallel" in message_text(system)
    assert "makes a subtask wait" in message_text(system)
    assert "Use at most 12 subtasks." in message_text(human)


def test_bad_arguments_fail_before_any_call() -> None:
    model = ScriptedChatModel(script=[VALID])
    with pytest.raises(PlanValidationError, match="the goal is empty"):
        make_plan("  ", model=model)
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        make_plan(GOAL, model=model, attempts=0)
    assert model.requests == []


# -- YAML ----------------------------------------------------------------------------------


def round_trip(plan: TaskPlan, tmp_path: Path) -> tuple[str, TaskPlan]:
    text = plan_to_yaml(plan)
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return text, TaskPlan.from_file(path)


def test_plan_to_yaml_round_trips_and_omits_defaults(tmp_path: Path) -> None:
    plan = TaskPlan.model_validate(
        {
            "task": "Review {doc} for {team}",
            "inputs": {
                "doc": {"description": "The document"},
                "team": {"description": "Who reads it", "default": "the board"},
                "chapters": {},
            },
            "subtasks": [
                sub("outline", "Outline {doc}.\nKeep it short.\n"),
                sub(
                    "each",
                    "  Indented first line\ntrailing space \nline with {item} and {{braces}}",
                    map="chapters",
                    allow_partial=True,
                    priority=2.5,
                    max_attempts=4,
                ),
                sub(
                    "final",
                    "Combine {outline}: ünïcode ✓",
                    ["outline", "each"],
                    kind="template",
                    system="Be brief.",
                    model="openai:gpt-4o-mini",
                    output_schema={"type": "object", "properties": {"x": {"type": "string"}}},
                ),
            ],
            "aggregation": {"instructions": "Use headings."},
        }
    )

    text, loaded = round_trip(plan, tmp_path)

    assert loaded == plan
    assert "kind: llm" not in text and "depends_on: []" not in text
    assert "allow_partial: false" not in text and "enabled" not in text
    assert "prompt: |\n    Outline {doc}.\n    Keep it short.\n" in text
    assert list(yaml_keys(text)) == ["task", "inputs", "subtasks", "aggregation"]


def yaml_keys(text: str) -> list[str]:
    import yaml

    return list(yaml.safe_load(text))


def test_plan_to_yaml_round_trips_the_example_and_a_simulated_plan(
    tmp_path: Path, research_plan_path: Path
) -> None:
    for plan in (
        TaskPlan.from_file(research_plan_path),
        make_plan(GOAL, model=SimulatedChatModel(latency=0)),
    ):
        _, loaded = round_trip(plan, tmp_path)
        assert loaded == plan


def test_plan_to_yaml_refuses_chat_model_objects() -> None:
    plan = TaskPlan(
        task="t", subtasks=[SubTask(id="a", prompt="p", model=SimulatedChatModel(latency=0))]
    )
    with pytest.raises(ValueError, match="subtask 'a' uses a chat model object"):
        plan_to_yaml(plan)
