"""Bad plans are rejected when built, with an error that names the culprit and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from fanfold import (
    DependencyCycleError,
    DuplicateSubtaskError,
    EmptyPlanError,
    InvalidOutputSchemaError,
    InvalidSubtaskIdError,
    MissingInputError,
    NodeKindRegistry,
    PlanError,
    PlanFileError,
    PlanValidationError,
    SelfDependencyError,
    SubTask,
    TaskPlan,
    UndeclaredDependencyError,
    UnknownDependencyError,
    UnknownKindError,
    compile_plan,
)


def plan_dict(*subtasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"task": "Check the plan", "subtasks": list(subtasks), **fields}


def sub(sid: str, *deps: str, prompt: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": sid, "prompt": prompt or f"do {sid}", "depends_on": list(deps), **fields}


def rejected(data: dict[str, Any], error: type[PlanError]) -> PlanError:
    """Validate `data` as a plan; assert it raises `error` (a ValueError) and return it."""
    with pytest.raises(error) as info:
        TaskPlan.model_validate(data)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, ValidationError)
    return info.value


# -- ids -----------------------------------------------------------------------------------


def test_duplicate_ids_are_rejected_naming_the_id():
    err = rejected(plan_dict(sub("scan"), sub("scan")), DuplicateSubtaskError)
    assert err.subtask_id == "scan"
    assert "'scan'" in str(err)
    assert "unique" in str(err)


def test_duplicate_ids_are_rejected_when_the_plan_is_built_from_keywords():
    with pytest.raises(DuplicateSubtaskError):
        TaskPlan(task="t", subtasks=[SubTask(id="a", prompt="x"), SubTask(id="a", prompt="y")])


@pytest.mark.parametrize(
    "bad_id",
    ["has space", "1st", "a.b", "a:b", "a|b", "a/b", "x" * 65, ""],
    ids=["space", "leading-digit", "dot", "colon", "pipe", "slash", "too-long", "empty"],
)
def test_ids_that_cannot_name_a_graph_node_are_rejected(bad_id: str):
    err = rejected(plan_dict(sub(bad_id)), InvalidSubtaskIdError)
    assert err.subtask_id == bad_id
    message = str(err)
    assert bad_id[:20] in message
    # The message says what a good id looks like.
    assert any(hint in message for hint in ("letter", "at most", "short name"))


@pytest.mark.parametrize("reserved", ["aggregate", "results", "inputs", "__start__", "__end__"])
def test_reserved_ids_are_rejected_with_a_rename_hint(reserved: str):
    err = rejected(plan_dict(sub(reserved)), InvalidSubtaskIdError)
    assert err.subtask_id == reserved
    assert "reserved" in str(err)
    assert "rename" in str(err)


@pytest.mark.parametrize("good_id", ["market_scan", "market-scan", "_private", "Step2", "résumé"])
def test_ids_made_of_letters_digits_dashes_and_underscores_are_accepted(good_id: str):
    plan = TaskPlan.model_validate(plan_dict(sub(good_id)))
    assert plan.ids == [good_id]


def test_an_empty_plan_is_rejected():
    err = rejected(plan_dict(), EmptyPlanError)
    assert "no subtasks" in str(err)
    assert "add at least one" in str(err)


# -- dependencies --------------------------------------------------------------------------


def test_unknown_dependency_suggests_the_closest_id():
    err = rejected(plan_dict(sub("research"), sub("summary", "reserch")), UnknownDependencyError)
    assert (err.subtask_id, err.dependency) == ("summary", "reserch")
    assert "'summary'" in str(err)
    assert "did you mean 'research'?" in str(err)


def test_unknown_dependency_without_a_close_match_says_how_to_fix_it():
    err = rejected(plan_dict(sub("research"), sub("summary", "zzz")), UnknownDependencyError)
    assert "did you mean" not in str(err)
    assert "'zzz'" in str(err)
    assert "remove it or add a subtask" in str(err)


def test_self_dependency_is_rejected():
    err = rejected(plan_dict(sub("loop", "loop")), SelfDependencyError)
    assert err.subtask_id == "loop"
    assert "depends on itself" in str(err)


def test_a_prompt_that_uses_its_own_output_is_a_self_dependency():
    err = rejected(plan_dict(sub("loop", prompt="improve {loop}")), SelfDependencyError)
    assert err.subtask_id == "loop"


def test_cycle_is_reported_with_its_path():
    data = plan_dict(sub("a", "b"), sub("b", "c"), sub("c", "a"))
    err = rejected(data, DependencyCycleError)
    assert "a -> b -> c -> a" in str(err)
    assert err.cycle == ["a", "b", "c"]
    assert "remove one of these dependencies" in str(err)


def test_cycle_away_from_the_first_subtask_is_reported_with_only_its_members():
    data = plan_dict(sub("root"), sub("p", "root", "q"), sub("q", "p"), sub("leaf", "q"))
    err = rejected(data, DependencyCycleError)
    assert sorted(err.cycle) == ["p", "q"]
    path = str(err).split("dependency cycle: ")[1].split(" (")[0]
    nodes = path.split(" -> ")
    assert nodes[0] == nodes[-1]
    assert "root" not in nodes and "leaf" not in nodes


def test_a_long_chain_is_not_mistaken_for_a_cycle():
    chain = [sub("s0")] + [sub(f"s{i}", f"s{i - 1}") for i in range(1, 1500)]
    plan = TaskPlan.model_validate(plan_dict(*chain))
    assert plan.topological_order() == [f"s{i}" for i in range(1500)]


def test_placeholder_naming_a_subtask_needs_a_declared_dependency():
    data = plan_dict(sub("facts"), sub("summary", prompt="Summarise {facts}"))
    err = rejected(data, UndeclaredDependencyError)
    assert (err.subtask_id, err.placeholder) == ("summary", "facts")
    assert "add 'facts' to its depends_on" in str(err)


def test_placeholder_naming_a_declared_dependency_is_accepted():
    plan = TaskPlan.model_validate(
        plan_dict(sub("facts"), sub("summary", "facts", prompt="Summarise {facts}"))
    )
    assert plan.subtask("summary").depends_on == ["facts"]


def test_an_input_and_a_subtask_with_the_same_name_are_named_as_a_clash():
    data = plan_dict(sub("topic", prompt="Research {topic}"), inputs={"topic": "tides"})
    err = rejected(data, InvalidSubtaskIdError)
    assert err.subtask_id == "topic"
    assert "'topic' names both a run input and a subtask" in str(err)
    assert "depends on itself" not in str(err)


@pytest.mark.parametrize("path", ["facts.upper", "facts.title", "facts.0", "facts.x.y"])
def test_a_field_of_a_subtask_that_answers_with_text_is_a_plan_error(path: str):
    data = plan_dict(sub("facts"), sub("summary", "facts", prompt=f"Summarise {{{path}}}"))
    err = rejected(data, PlanValidationError)
    assert f"uses {{{path}}} in its prompt, but subtask 'facts' answers with text" in str(err)
    assert "write {facts}, or give 'facts' an output_schema" in str(err)


def test_a_field_of_a_subtask_with_an_output_schema_is_accepted():
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    plan = TaskPlan.model_validate(
        plan_dict(sub("facts", output_schema=schema), sub("s", "facts", prompt="{facts.title}"))
    )
    assert plan.subtask("s").placeholders == ["facts"]


def test_a_method_of_a_text_input_fails_the_subtask_instead_of_rendering_it(echo):
    plan = plan_dict(sub("shout", prompt="say {doc.upper}"), inputs=["doc"])
    graph = compile_plan(plan, model=echo, aggregator=None)
    state = graph.invoke({"inputs": {"doc": "hello"}})
    result = state["results"]["shout"]
    assert result.status == "failed"
    assert "{doc.upper}: doc is text, which has no fields; write {doc}" in result.error
    assert "built-in method" not in result.error and not echo.calls


BAD_SCHEMAS = {
    "unknown type": ({"type": "nonsense"}, "is not a valid JSON Schema at type"),
    "dangling $ref": (
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        "has $ref '#/$defs/missing', which names nothing in the schema",
    ),
    "remote $ref": ({"$ref": "https://example.com/s.json"}, "fanfold fetches no schemas"),
    "matches nothing": ({"not": {}}, "matches no value"),
}


@pytest.mark.parametrize("place", ["subtask", "aggregation"])
@pytest.mark.parametrize("case", list(BAD_SCHEMAS))
def test_an_unusable_output_schema_is_a_plan_error(case: str, place: str):
    schema, problem = BAD_SCHEMAS[case]
    if place == "subtask":
        data = plan_dict(sub("a", output_schema=schema))
    else:
        data = plan_dict(sub("a"), aggregation={"output_schema": schema})
    err = rejected(data, InvalidOutputSchemaError)
    assert err.subtask_id == ("a" if place == "subtask" else None)
    who = "subtask 'a'" if place == "subtask" else "the aggregation"
    assert str(err).startswith(f"the output_schema of {who} ") and problem in str(err)


@pytest.mark.parametrize("case", list(BAD_SCHEMAS))
def test_estimate_exits_non_zero_on_an_unusable_output_schema(tmp_path: Path, case: str):
    from typer.testing import CliRunner

    from fanfold.cli import app

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_dict(sub("a", output_schema=BAD_SCHEMAS[case][0]))))
    result = CliRunner(env={"FANFOLD_HOME": str(tmp_path)}).invoke(app, ["estimate", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "output_schema of subtask 'a'" in result.stderr


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": ["x"]},
        {"type": "object"},  # an object without properties
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    ],
)
def test_schemas_a_tool_call_cannot_take_as_they_are_are_asked_for_wrapped(schema):
    from fanfold import resolve_model
    from fanfold.testing import SimServer, SimServerConfig

    plan = plan_dict(sub("a", output_schema=schema), aggregation={"output_schema": schema})
    with SimServer(SimServerConfig(latency=0.001, api_key="sk-test-wrapped")) as server:
        model = resolve_model("openai:sim", base_url=server.base_url, api_key="sk-test-wrapped")
        state = compile_plan(plan, model=model).invoke({"inputs": {}})
    result = state["results"]["a"]
    assert result.status == "succeeded", result.error
    assert state["aggregate_error"] is None
    for value in (result.output, state["output"]):
        jsonschema.validate(value, schema)


# -- kinds and fields ----------------------------------------------------------------------


def test_unknown_kind_is_rejected_at_compile_time_with_a_suggestion(echo):
    plan = TaskPlan.model_validate(plan_dict(sub("a", kind="lm")))  # the plan itself is fine
    with pytest.raises(UnknownKindError) as info:
        compile_plan(plan, model=echo)
    assert (info.value.subtask_id, info.value.kind) == ("a", "lm")
    assert "did you mean 'llm'?" in str(info.value)
    assert echo.calls == []


def test_unknown_kind_without_a_close_match_lists_the_registered_kinds(echo):
    plan = TaskPlan.model_validate(plan_dict(sub("a", kind="spreadsheet")))
    with pytest.raises(UnknownKindError) as info:
        compile_plan(plan, model=echo)
    assert "'llm'" in str(info.value) and "'template'" in str(info.value)
    assert "register_node_kind" in str(info.value)


def test_a_custom_registry_without_llm_rejects_default_kind_subtasks(echo):
    kinds = NodeKindRegistry()
    kinds.register("shout", lambda call: call.prompt.upper())
    with pytest.raises(UnknownKindError) as info:
        compile_plan(plan_dict(sub("a")), model=echo, kinds=kinds)
    assert "'shout'" in str(info.value)


@pytest.mark.parametrize(
    ("data", "culprit"),
    [
        ({"task": "t", "subtasks": "not a list"}, "subtasks"),
        ({"task": 3, "subtasks": [sub("a")]}, "task"),
        ({"task": "t", "subtasks": [{"id": 7, "prompt": "x"}]}, "id"),
        ({"task": "t", "subtasks": [{"id": "a"}]}, "prompt"),
        ({"task": "t", "subtasks": [sub("a", dependson=["b"])]}, "dependson"),
        ({"task": "t", "subtasks": [sub("a", max_attempts=0)]}, "max_attempts"),
        ({"subtasks": [sub("a")]}, "task"),
        ({"task": "t", "subtasks": [sub("a")], "stray": 1}, "stray"),
    ],
    ids=[
        "subtasks-not-a-list",
        "task-not-text",
        "id-not-text",
        "prompt-missing",
        "misspelt-field",
        "attempts-below-one",
        "task-missing",
        "unknown-top-level-field",
    ],
)
def test_wrong_field_types_raise_a_plan_validation_error_naming_the_field(data, culprit):
    err = rejected(data, PlanValidationError)
    assert culprit in str(err)
    assert isinstance(err.__cause__, ValidationError)  # translated, not swallowed


def test_a_bad_field_in_one_of_many_subtasks_names_that_subtask():
    data = plan_dict(sub("first"), sub("second"), {"id": "third", "prompt": "x", "kind": 5})
    err = rejected(data, PlanValidationError)
    assert "kind" in str(err)
    assert "third" in str(err) or "subtasks.2" in str(err)


def test_subtask_built_directly_with_a_wrong_type_raises_plan_validation_error():
    with pytest.raises(PlanValidationError) as info:
        SubTask(id="a", prompt=["not", "text"])
    assert "prompt" in str(info.value)


def test_model_validate_json_wraps_pydantic_errors_too():
    with pytest.raises(PlanValidationError):
        TaskPlan.model_validate_json('{"task": "t", "subtasks": 5}')


def test_pattern_aliases_type_content_and_dependencies_are_accepted():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "content": "first", "type": "template"},
                {"id": "b", "content": "second", "dependencies": ["a"]},
                {"id": "c", "content": "third", "dependencies": "b"},
            ],
        }
    )
    a, b, c = plan.subtasks
    assert (a.prompt, a.kind, a.depends_on) == ("first", "template", [])
    assert (b.prompt, b.kind, b.depends_on) == ("second", "llm", ["a"])
    assert c.depends_on == ["b"]  # a single dependency may be written as a string


def test_a_dict_output_schema_gets_a_title_for_the_tool_name():
    subtask = SubTask(id="a", prompt="x", output_schema={"type": "object", "properties": {}})
    assert subtask.output_schema["title"] == "Output"


# -- plan files ----------------------------------------------------------------------------


def test_missing_plan_file_raises_plan_file_error(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PlanFileError) as info:
        TaskPlan.from_file(missing)
    assert info.value.path == str(missing)
    assert "does not exist" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_yaml_syntax_error_raises_plan_file_error_with_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: t\nsubtasks:\n  - id: a\n    prompt: [unclosed\n", encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        TaskPlan.from_file(path)
    assert "not valid YAML" in str(info.value)
    assert "line " in str(info.value)
    assert str(path) in str(info.value)


def test_json_syntax_error_raises_plan_file_error_with_the_line(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text('{"task": "t",\n "subtasks": [}', encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        TaskPlan.from_file(path)
    assert "not valid JSON (line 2" in str(info.value)


def alias_bomb(levels: int) -> str:
    """A one-line YAML mapping whose nested aliases stand for 9**levels strings."""
    parts = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        parts.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "{" + ", ".join(parts) + "}"


BOMB_PLACES = {
    "output_schema": "subtasks:\n  - {{id: a, prompt: x, output_schema: {bomb}}}\n",
    "options": "subtasks:\n  - {{id: a, prompt: x, options: {bomb}}}\n",
    "input default": (
        "inputs: {{doc: {{default: {bomb}}}}}\nsubtasks:\n  - {{id: a, prompt: '{{doc}}'}}\n"
    ),
    "aggregation.output_schema": (
        "subtasks:\n  - {{id: a, prompt: x}}\naggregation: {{output_schema: {bomb}}}\n"
    ),
}


@pytest.mark.parametrize("place", list(BOMB_PLACES))
@pytest.mark.parametrize("levels", [6, 9])  # 531,441 and 387,420,489 strings
def test_a_plan_file_whose_aliases_expand_too_far_is_refused_in_one_line(
    tmp_path: Path, place: str, levels: int
):
    text = "task: t\n" + BOMB_PLACES[place].format(bomb=alias_bomb(levels))
    assert len(text.encode()) < 1000
    path = tmp_path / "laughs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        TaskPlan.from_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "aliases (*name) expand to more than 100,000 values" in message


def test_a_plan_file_with_a_recursive_alias_is_refused(tmp_path: Path):
    path = tmp_path / "loop.yaml"
    path.write_text("task: t\nsubtasks:\n  - &s {id: a, prompt: x, options: [*s]}\n")
    with pytest.raises(PlanFileError, match="an alias refers to a value that contains it"):
        TaskPlan.from_file(path)


def test_a_plan_file_may_still_use_a_few_aliases_and_merge_keys(tmp_path: Path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "task: t\nsubtasks:\n  - &a {id: a, prompt: x, max_attempts: 2}\n"
        "  - {<<: *a, id: b, depends_on: [a]}\n",
        encoding="utf-8",
    )
    plan = TaskPlan.from_file(path)
    assert plan.ids == ["a", "b"] and plan.subtasks[1].max_attempts == 2


def test_a_plan_file_that_is_not_a_mapping_raises_plan_file_error(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- id: a\n  prompt: x\n", encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        TaskPlan.from_file(path)
    assert "mapping" in str(info.value) and "list" in str(info.value)


def test_a_plan_file_with_a_bad_graph_raises_the_graph_error(tmp_path: Path):
    path = tmp_path / "cycle.yaml"
    path.write_text(
        "task: t\nsubtasks:\n"
        "  - {id: a, prompt: x, depends_on: [b]}\n"
        "  - {id: b, prompt: y, depends_on: [a]}\n",
        encoding="utf-8",
    )
    with pytest.raises(DependencyCycleError):
        TaskPlan.from_file(path)
    with pytest.raises(DependencyCycleError):
        compile_plan(path, model="simulated")


def test_json_and_yaml_files_load_the_same_plan(tmp_path: Path):
    (tmp_path / "p.yaml").write_text(
        "task: t\nsubtasks:\n  - {id: a, prompt: x}\n  - {id: b, prompt: y, depends_on: a}\n",
        encoding="utf-8",
    )
    (tmp_path / "p.json").write_text(
        '{"task": "t", "subtasks": [{"id": "a", "prompt": "x"},'
        ' {"id": "b", "prompt": "y", "depends_on": ["a"]}]}',
        encoding="utf-8",
    )
    from_yaml = TaskPlan.from_file(tmp_path / "p.yaml")
    from_json = TaskPlan.from_file(tmp_path / "p.json")
    assert from_yaml.fingerprint() == from_json.fingerprint()


# -- checks that run again at compile time -------------------------------------------------


def test_a_plan_mutated_after_validation_is_checked_again_at_compile_time(echo):
    plan = TaskPlan.model_validate(plan_dict(sub("a"), sub("b", "a")))
    plan.subtasks[0].depends_on.append("b")  # now a <-> b
    with pytest.raises(DependencyCycleError):
        compile_plan(plan, model=echo)


def test_max_concurrency_below_one_is_rejected(echo):
    with pytest.raises(ValueError, match="max_concurrency"):
        compile_plan(plan_dict(sub("a")), model=echo, max_concurrency=0)


# -- run inputs ----------------------------------------------------------------------------


def test_required_inputs_lists_undefaulted_placeholders_with_their_users():
    plan = TaskPlan.model_validate(
        plan_dict(
            sub("a", prompt="About {topic} for {audience}"),
            sub("b", "a", prompt="More on {topic}: {a}"),
            task="Brief on {topic} in {tone}",
            inputs={"audience": {"default": "kids"}, "tone": {"description": "the voice"}},
        )
    )
    assert plan.required_inputs() == {"topic": ["task", "a", "b"], "tone": ["task"]}


def test_a_bare_input_value_is_its_default():
    plan = TaskPlan.model_validate(
        plan_dict(sub("a", prompt="Weather in {city}"), inputs={"city": "Lisbon", "days": 3})
    )
    assert plan.inputs["city"].default == "Lisbon" and plan.inputs["city"].description == ""
    assert plan.inputs["days"].default == 3
    assert plan.required_inputs() == {}


def test_missing_run_input_fails_before_any_model_call(echo, make_plan):
    plan = make_plan(
        {"a": [], "b": []}, prompts={"a": "[a] about {topic}"}, task="Brief on {topic}"
    )
    graph = compile_plan(plan, model=echo)
    with pytest.raises(MissingInputError) as info:
        graph.invoke({"inputs": {}})
    assert info.value.missing == {"topic": ["task", "a"]}
    assert "'topic'" in str(info.value)
    assert 'pass it as inputs={"topic": ...}' in str(info.value)
    assert "--input" not in str(info.value)
    assert echo.calls == []


@pytest.mark.parametrize(
    ("interface", "hint"),
    [
        ("python", 'inputs={"topic": ...}'),
        ("cli", "--input topic=VALUE"),
        ("server", '{"inputs": {"topic": ...}} (the "inputs" field of the run\'s input)'),
    ],
)
def test_missing_input_error_names_the_option_of_the_interface_in_use(
    interface, hint, echo, make_plan
):
    plan = make_plan({"a": []}, prompts={"a": "[a] about {topic}"})
    graph = compile_plan(plan, model=echo, input_interface=interface)
    with pytest.raises(MissingInputError) as info:
        graph.invoke({"inputs": {}})
    assert str(info.value).endswith(f"pass it as {hint}")
    assert info.value.interface == interface


async def test_missing_run_input_fails_before_any_model_call_async(echo, make_plan):
    plan = make_plan({"a": [], "b": []}, prompts={"a": "[a] about {topic}"})
    graph = compile_plan(plan, model=echo)
    with pytest.raises(MissingInputError) as info:
        await graph.ainvoke({"inputs": {}})
    assert "'topic' (used by 'a')" in str(info.value)
    assert echo.calls == []


def test_an_input_used_only_by_a_dependent_is_still_checked_before_the_run(echo, make_plan):
    plan = make_plan({"a": [], "b": ["a"]}, prompts={"b": "[b] {a} for {audience}"})
    graph = compile_plan(plan, model=echo)
    with pytest.raises(MissingInputError):
        graph.invoke({"inputs": {}})
    assert echo.calls == []


def test_declared_input_default_fills_the_prompt(echo, make_plan):
    plan = make_plan(
        {"a": []},
        prompts={"a": "[a] about {topic}"},
        inputs={"topic": {"description": "What to cover", "default": "tides"}},
    )
    compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {}})
    assert echo.call_for("a").human == "[a] about tides"


def test_run_input_overrides_the_declared_default(echo, make_plan):
    plan = make_plan(
        {"a": []}, prompts={"a": "[a] about {topic}"}, inputs={"topic": {"default": "tides"}}
    )
    compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {"topic": "comets"}})
    assert echo.call_for("a").human == "[a] about comets"


def test_inputs_may_be_declared_as_a_list_of_names():
    plan = TaskPlan.model_validate(plan_dict(sub("a", prompt="{topic}"), inputs=["topic"]))
    assert set(plan.inputs) == {"topic"}
    assert plan.inputs["topic"].default is None


def test_plan_task_placeholders_are_filled_from_run_inputs(echo, make_plan):
    plan = make_plan(
        {"a": []}, prompts={"a": "[a] restate: {task}"}, task="Write about {topic} for {who}"
    )
    graph = compile_plan(plan, model=echo)
    graph.invoke({"inputs": {"topic": "tides", "who": "sailors"}})
    call = echo.call_for("a")
    assert call.human == "[a] restate: Write about tides for sailors"
    assert "Overall task: Write about tides for sailors" in call.system
    assert "Task: Write about tides for sailors" in echo.call_for("aggregate").human
