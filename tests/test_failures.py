"""A failure stays local: siblings finish, dependents are skipped, the aggregate still runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from fanfold import (
    MissingCredentialsError,
    ModelResolutionError,
    PlanError,
    ProviderError,
    SimulatedChatModel,
    TaskPlan,
    compile_plan,
)

# bad fails; child and grandchild depend on it (transitively); mixed depends on bad and
# other; other and its child are untouched.
FAILING_SHAPE = {
    "bad": [],
    "child": ["bad"],
    "grandchild": ["child"],
    "other": [],
    "mixed": ["bad", "other"],
    "other_child": ["other"],
}
SKIPPED = {
    "child": "dependency 'bad' failed",
    "grandchild": "dependency 'child' skipped",
    "mixed": "dependency 'bad' failed",
}


def statuses(state) -> dict[str, str]:
    return {sid: r.status for sid, r in state["results"].items()}


# -- siblings ------------------------------------------------------------------------------


def test_failing_subtask_never_cancels_or_loses_its_siblings(make_plan):
    model = SimulatedChatModel(fail_on=("EXPLODE",), latency=0.002)
    plan = make_plan(
        {"bad": [], "sibling1": [], "sibling2": [], "after": ["sibling1"]},
        prompts={"bad": "[bad] EXPLODE now"},
    )
    state = compile_plan(plan, model=model, aggregator=None).invoke({"inputs": {}})
    bad = state["results"]["bad"]
    assert bad.status == "failed"
    assert bad.output is None
    assert bad.error.startswith("SimulatedModelError: ")
    assert "EXPLODE" in bad.error
    assert bad.started_at is not None and bad.finished_at >= bad.started_at
    for sid in ("sibling1", "sibling2", "after"):
        result = state["results"][sid]
        assert result.status == "succeeded", result.error
        assert "simulated reply" in result.output


async def test_failing_subtask_never_cancels_a_slower_sibling_async(make_plan, echo_factory):
    model = echo_factory(fail_on=("[bad]",), latencies={"[slow]": 0.05})
    plan = make_plan({"bad": [], "slow": [], "after": ["slow"]})
    state = await compile_plan(plan, model=model, aggregator=None).ainvoke({"inputs": {}})
    assert statuses(state) == {"bad": "failed", "slow": "succeeded", "after": "succeeded"}
    slow = model.call_for("slow")
    assert slow.outcome == "replied"
    assert slow.finished > model.call_for("bad").finished  # it outlived the failure
    assert state["results"]["slow"].output == "echo: [slow] do slow"


# -- dependents ----------------------------------------------------------------------------


def check_only_dependents_skipped(state, model) -> None:
    assert statuses(state) == {
        "bad": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "mixed": "skipped",
        "other": "succeeded",
        "other_child": "succeeded",
    }
    for sid, reason in SKIPPED.items():
        result = state["results"][sid]
        assert result.error == reason
        assert result.output is None and result.started_at is None
        assert model.calls_for(sid) == []  # a skipped subtask is never sent to the model
    assert state["results"]["bad"].error == "ScriptedFailure: scripted failure on '[bad]'"
    assert state["totals"].failed == 1
    assert state["totals"].skipped == 3
    assert state["totals"].succeeded == 2


def test_failed_subtask_skips_only_its_dependents(make_plan, echo_factory):
    model = echo_factory(fail_on=("[bad]",))
    state = compile_plan(make_plan(FAILING_SHAPE), model=model).invoke({"inputs": {}})
    check_only_dependents_skipped(state, model)


async def test_failed_subtask_skips_only_its_dependents_async(make_plan, echo_factory):
    model = echo_factory(fail_on=("[bad]",))
    state = await compile_plan(make_plan(FAILING_SHAPE), model=model).ainvoke({"inputs": {}})
    check_only_dependents_skipped(state, model)


def test_a_failure_in_a_kind_function_is_recorded_like_a_model_failure(make_plan, echo):
    from fanfold import NodeKindRegistry

    kinds = NodeKindRegistry()

    @kinds.register("explode")
    def explode(call):
        raise KeyError("no such row")

    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "x", "kind": "explode"},
                {"id": "b", "prompt": "y", "kind": "explode", "depends_on": ["a"]},
            ],
        }
    )
    state = compile_plan(plan, model=echo, kinds=kinds, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["a"].status == "failed"
    assert state["results"]["a"].error == "KeyError: 'no such row'"
    assert state["results"]["b"].error == "dependency 'a' failed"


def kind_plan(kind: str) -> TaskPlan:
    return TaskPlan.model_validate(
        {"task": "t", "subtasks": [{"id": "a", "prompt": "not json", "kind": kind}]}
    )


def test_a_json_error_in_a_kinds_own_code_is_not_retried():
    from fanfold import NodeKindRegistry

    kinds = NodeKindRegistry()

    @kinds.register("parse")
    def parse(call):
        return json.loads(call.prompt)

    state = compile_plan(kind_plan("parse"), kinds=kinds, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["a"].status == "failed"
    assert state["results"]["a"].attempts == 1
    assert "JSONDecodeError" in state["results"]["a"].error


def test_an_error_raised_while_handling_a_transient_one_is_not_retried():
    from fanfold import NodeKindRegistry

    kinds = NodeKindRegistry()

    @kinds.register("reraise")
    def reraise(call):
        try:
            raise TimeoutError("the first try timed out")
        except TimeoutError:
            raise ValueError("the input is wrong") from None

    state = compile_plan(kind_plan("reraise"), kinds=kinds, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["a"].attempts == 1
    assert state["results"]["a"].error == "ValueError: the input is wrong"


# -- aggregation ---------------------------------------------------------------------------


def test_aggregate_still_runs_and_lists_what_is_missing(make_plan, echo_factory):
    model = echo_factory(fail_on=("[bad]",))
    state = compile_plan(make_plan(FAILING_SHAPE), model=model).invoke({"inputs": {}})
    prompt = model.call_for("aggregate").human
    assert "### other\necho: [other] do other" in prompt
    assert "### other_child\necho: [other_child] do other_child" in prompt
    assert "say briefly what is missing" in prompt
    missing = prompt.split("what is missing because of them:")[1]
    assert "- bad: failed (ScriptedFailure: scripted failure on '[bad]')" in missing
    for sid, reason in SKIPPED.items():
        assert f"- {sid}: skipped ({reason})" in missing
    assert "other" not in missing
    assert state["output"] == model.call_for("aggregate").reply
    assert state["aggregate_error"] is None


def test_aggregate_runs_when_every_subtask_failed(make_plan, echo_factory):
    model = echo_factory(fail_on=("[a]", "[b]"))
    state = compile_plan(make_plan({"a": [], "b": []}), model=model).invoke({"inputs": {}})
    prompt = model.call_for("aggregate").human
    assert "Results to combine:\n\n(none)" in prompt
    assert "- a: failed" in prompt and "- b: failed" in prompt
    assert state["totals"].failed == 2


def test_failing_aggregator_model_is_recorded_not_raised(make_plan, echo_factory):
    workers, aggregator = echo_factory(), echo_factory(fail_on=("Task:",))
    graph = compile_plan(make_plan({"a": [], "b": ["a"]}), model=workers, aggregator=aggregator)
    state = graph.invoke({"inputs": {}})
    assert state["aggregate_error"] == "ScriptedFailure: scripted failure on 'Task:'"
    assert state["output"] is None
    assert statuses(state) == {"a": "succeeded", "b": "succeeded"}
    assert state["totals"].succeeded == 2
    assert len(aggregator.calls) == 1


async def test_failing_aggregator_callable_is_recorded_not_raised_async(make_plan, echo):
    async def aggregator(results):
        raise ValueError(f"cannot combine {sorted(results)}")

    graph = compile_plan(make_plan({"a": [], "b": []}), model=echo, aggregator=aggregator)
    state = await graph.ainvoke({"inputs": {}})
    assert state["aggregate_error"] == "ValueError: cannot combine ['a', 'b']"
    assert state["output"] is None
    assert state["totals"].succeeded == 2


def test_failing_aggregator_callable_is_recorded_not_raised(make_plan, echo):
    def aggregator(results):
        raise ValueError("nothing to say")

    state = compile_plan(make_plan({"a": []}), model=echo, aggregator=aggregator).invoke(
        {"inputs": {}}
    )
    assert state["aggregate_error"] == "ValueError: nothing to say"


# -- model resolution at compile time ------------------------------------------------------


def test_missing_credentials_raise_at_compile_time(make_plan):
    with pytest.raises(MissingCredentialsError) as info:
        compile_plan(make_plan({"a": []}))  # the default model is openai:gpt-4o-mini
    err = info.value
    assert isinstance(err, ModelResolutionError) and isinstance(err, ProviderError)
    assert not isinstance(err, PlanError)
    assert err.model == "openai:gpt-4o-mini"
    assert "OPENAI_API_KEY" in str(err)
    assert "simulated" in str(err)


def test_missing_credentials_for_a_subtask_model_raise_at_compile_time(simulated):
    plan = TaskPlan.model_validate(
        {"task": "t", "subtasks": [{"id": "a", "prompt": "x", "model": "openai:gpt-4o"}]}
    )
    with pytest.raises(MissingCredentialsError) as info:
        compile_plan(plan, model=simulated)
    assert info.value.model == "openai:gpt-4o"


def test_missing_credentials_for_the_aggregation_model_raise_at_compile_time(simulated):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [{"id": "a", "prompt": "x"}],
            "aggregation": {"model": "openai:gpt-4o"},
        }
    )
    with pytest.raises(MissingCredentialsError):
        compile_plan(plan, model=simulated)
    # Without aggregation the same plan needs no key.
    compile_plan(plan, model=simulated, aggregator=None)


def test_a_plan_whose_subtasks_all_name_a_model_resolves_no_default(make_plan):
    plan = make_plan({"a": [], "b": ["a"]})
    for sub in plan.subtasks:
        sub.model = "simulated"
    graph = compile_plan(plan, aggregator=None)  # no key set, and model=None (the default)
    state = graph.invoke({"inputs": {}})
    assert {r.status for r in state["results"].values()} == {"succeeded"}
    assert {r.model for r in state["results"].values()} == {"simulated"}


@pytest.mark.parametrize("spec", ["simulated:fast", "simulated:gpt-4o"])
def test_the_simulated_model_takes_no_model_name(spec, make_plan):
    with pytest.raises(ModelResolutionError) as info:
        compile_plan(make_plan({"a": []}), model=spec)
    assert spec in str(info.value) and "'simulated'" in str(info.value)


def test_a_base_url_alone_is_enough_for_an_openai_compatible_server(make_plan, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    graph = compile_plan(make_plan({"a": []}), model="openai:local-model")  # nothing is sent
    assert graph.fanfold_runtime.models["a"].model_name == "local-model"


@pytest.mark.parametrize("spec", ["nosuchprovider:some-model", "   "])
def test_unknown_model_string_raises_at_compile_time(spec, make_plan):
    with pytest.raises(ModelResolutionError) as info:
        compile_plan(make_plan({"a": []}), model=spec)
    assert not isinstance(info.value, MissingCredentialsError)
    assert "simulated" in str(info.value)


# -- cancellation --------------------------------------------------------------------------

CANCEL_SHAPE = {"fast": [], "slow1": [], "slow2": [], "after": ["slow1"]}


async def test_cancelling_an_astream_run_midway_cancels_background_calls(make_plan, echo_factory):
    model = echo_factory(latencies={"[slow": 5.0})
    graph = compile_plan(make_plan(CANCEL_SHAPE), model=model)
    stream = graph.astream({"inputs": {}}, stream_mode="custom")
    async with contextlib.aclosing(stream):
        async for event in stream:
            if (event["subtask"], event["status"]) == ("fast", "succeeded"):
                break
    await asyncio.sleep(0.05)
    assert model.in_flight == 0
    assert model.call_for("slow1").outcome == "cancelled"
    assert model.call_for("slow2").outcome == "cancelled"
    assert model.calls_for("after") == []
    assert model.calls_for("aggregate") == []
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("fanfold:")]
    assert leftover == []


async def test_cancelling_an_ainvoke_task_cancels_background_calls(make_plan, echo_factory):
    model = echo_factory(latencies={"[slow": 5.0})
    graph = compile_plan(make_plan(CANCEL_SHAPE), model=model)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(graph.ainvoke({"inputs": {}}), timeout=0.2)
    await asyncio.sleep(0.05)
    assert model.in_flight == 0
    assert {c.node: c.outcome for c in model.calls} == {
        "fast": "replied",
        "slow1": "cancelled",
        "slow2": "cancelled",
    }


def test_closing_a_sync_stream_midway_cancels_background_calls(make_plan, echo_factory):
    model = echo_factory(latencies={"[slow": 5.0})
    graph = compile_plan(make_plan(CANCEL_SHAPE), model=model)
    stream = graph.stream({"inputs": {}}, stream_mode="custom")
    for event in stream:
        if (event["subtask"], event["status"]) == ("fast", "succeeded"):
            break
    stream.close()
    time.sleep(0.05)
    assert model.in_flight == 0
    assert model.call_for("slow1").outcome == "cancelled"
    assert model.call_for("slow2").outcome == "cancelled"
    assert model.calls_for("after") == []
    assert model.calls_for("aggregate") == []
