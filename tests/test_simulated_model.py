"""SimulatedChatModel and sample_from_schema: determinism, timing, streaming, tools."""

from __future__ import annotations

import asyncio
import enum
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler, CallbackManager
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from fanfold.models.schema_values import sample_from_schema
from fanfold.models.simulated import REPLY_PREFIX, SimulatedChatModel, SimulatedModelError

ODD_PROMPT = "Fill {name} and {{literal}} }{ with \ud800 lone surrogate, \x00 NUL, 🙂, \u202eRTL"


def make(**kwargs: Any) -> SimulatedChatModel:
    """A model that does not sleep unless the test asks it to."""
    kwargs.setdefault("latency", 0.0)
    return SimulatedChatModel(**kwargs)


def summed(chunks: list[Any]) -> AIMessageChunk:
    assert chunks, "stream yielded nothing"
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    number: int = Field(ge=1, le=9)


class Person(BaseModel):
    """A person with a nested address."""

    name: str
    address: Address
    previous: list[Address]
    favourite: Colour
    nickname: str | None = None
    tags: list[str] = Field(min_length=3, max_length=3)


# -- determinism -----------------------------------------------------------------------


def test_same_prompt_gives_same_reply_and_latency_across_instances() -> None:
    first = SimulatedChatModel(seed=7, latency_median=0.0001)
    second = SimulatedChatModel(seed=7, latency_median=0.0001)
    prompt = "Summarise the quarterly report"
    one, two = first.invoke(prompt), second.invoke(prompt)
    assert one.content == two.content
    assert one.usage_metadata == two.usage_metadata
    assert first.latency_for(prompt) == second.latency_for(prompt)
    second.invoke("something else entirely")  # call order must not matter
    assert second.invoke(prompt).content == one.content
    assert second.latency_for(prompt) == first.latency_for(prompt)


def test_different_seeds_give_different_replies_and_latencies() -> None:
    prompt = "Summarise the quarterly report"
    replies = {make(seed=seed).invoke(prompt).content for seed in range(5)}
    latencies = {SimulatedChatModel(seed=seed).latency_for(prompt) for seed in range(5)}
    assert len(replies) == 5
    assert len(latencies) == 5


def test_different_prompts_draw_lognormal_latencies_around_the_median() -> None:
    model = SimulatedChatModel(latency_median=0.2, latency_sigma=0.5)
    draws = [model.latency_for(f"prompt number {i}") for i in range(301)]
    assert len(set(draws)) == len(draws)
    assert 0.15 < statistics.median(draws) < 0.27
    assert all(d > 0 for d in draws)
    flat = SimulatedChatModel(latency_median=0.2, latency_sigma=0.0)
    assert flat.latency_for("anything") == pytest.approx(0.2)


def test_reply_is_marked_simulated_and_quotes_the_last_human_message() -> None:
    long_question = "word " * 40
    reply = make().invoke(
        [
            SystemMessage("You are terse."),
            HumanMessage("ignored earlier question"),
            HumanMessage("What   is\n the capital of France?  " + long_question),
        ]
    )
    assert isinstance(reply.content, str)
    assert reply.content.startswith(f"{REPLY_PREFIX} What is the capital of France? word")
    assert "ignored" not in reply.content
    assert reply.response_metadata == {"model_name": "simulated", "finish_reason": "stop"}
    assert reply.id
    assert make(model_name="demo").invoke("hi").response_metadata["model_name"] == "demo"


def test_reply_length_follows_output_tokens_and_usage_counts_words() -> None:
    model = make(output_tokens=40)
    for i in range(10):
        reply = model.invoke([SystemMessage("one two three"), HumanMessage(f"four five {i}")])
        assert isinstance(reply.content, str)
        words = len(reply.content.split())
        assert 20 <= words <= 60
        assert reply.usage_metadata == {
            "input_tokens": 6,
            "output_tokens": words,
            "total_tokens": 6 + words,
        }
    short = make(output_tokens=2).invoke("")
    assert short.usage_metadata is not None
    assert short.usage_metadata["input_tokens"] == 1


def test_each_call_gets_a_fresh_message_id() -> None:
    model = make()
    assert model.invoke("same").id != model.invoke("same").id


def test_llm_type_identifying_params_and_serialization() -> None:
    model = make(seed=3, latency_fn=lambda messages: 0.0, fail_on=["x"])
    assert model._llm_type == "simulated"
    params = model._identifying_params
    assert params["model_name"] == "simulated"
    assert params["seed"] == 3
    assert model.fail_on == ("x",)
    dumped = model.model_dump()
    assert "latency_fn" not in dumped
    assert dumped["seed"] == 3


# -- sync / async / streaming ----------------------------------------------------------


async def test_async_invoke_matches_sync_invoke() -> None:
    model = make(seed=11)
    sync_reply = model.invoke("compare me")
    async_reply = await model.ainvoke("compare me")
    assert async_reply.content == sync_reply.content
    assert async_reply.usage_metadata == sync_reply.usage_metadata


def test_stream_chunks_sum_to_the_invoke_message() -> None:
    model = make(seed=5, output_tokens=12)
    reply = model.invoke("stream this please")
    chunks = list(model.stream("stream this please"))
    assert len(chunks) > 3
    total = summed(chunks)
    assert total.content == reply.content
    assert total.usage_metadata == reply.usage_metadata
    assert total.response_metadata == reply.response_metadata
    assert chunks[-1].usage_metadata == reply.usage_metadata
    assert chunks[-1].chunk_position == "last"
    assert all(c.usage_metadata is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


async def test_astream_chunks_sum_to_the_invoke_message() -> None:
    model = make(seed=5, output_tokens=12)
    reply = await model.ainvoke("stream this please")
    chunks = [chunk async for chunk in model.astream("stream this please")]
    assert len(chunks) > 3
    total = summed(chunks)
    assert total.content == reply.content
    assert total.usage_metadata == reply.usage_metadata
    assert chunks[-1].usage_metadata == reply.usage_metadata
    assert chunks[-1].chunk_position == "last"


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_each_streamed_token_reaches_callbacks_exactly_once() -> None:
    recorder = TokenRecorder()
    chunks = list(make().stream("count my tokens", config={"callbacks": [recorder]}))
    assert recorder.tokens == [chunk.content for chunk in chunks]


async def test_stream_hooks_report_tokens_to_a_given_run_manager() -> None:
    model = make()
    messages: list[BaseMessage] = [HumanMessage("count my tokens")]
    recorder = TokenRecorder()
    (run,) = CallbackManager(handlers=[recorder]).on_chat_model_start({}, [messages])
    chunks = list(model._stream(messages, run_manager=run))
    assert len(chunks) > 1
    assert recorder.tokens == [chunk.text for chunk in chunks]
    async_recorder = TokenRecorder()
    manager = AsyncCallbackManager(handlers=[async_recorder])
    (async_run,) = await manager.on_chat_model_start({}, [messages])
    async_chunks = [chunk async for chunk in model._astream(messages, run_manager=async_run)]
    assert async_recorder.tokens == [chunk.text for chunk in async_chunks] == recorder.tokens


async def test_many_concurrent_tasks_and_threads_get_the_sequential_replies() -> None:
    model = make(seed=2)
    prompts = [f"task {i}" for i in range(40)]
    expected = [model.invoke(p).content for p in prompts]
    gathered = await asyncio.gather(*(model.ainvoke(p) for p in prompts))
    assert [r.content for r in gathered] == expected
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda p: model.invoke(p).content, prompts))
    assert threaded == expected


# -- latency ---------------------------------------------------------------------------


def test_fixed_latency_is_honoured_by_invoke_and_stream() -> None:
    model = SimulatedChatModel(latency=0.01)
    assert model.latency_for("anything") == 0.01
    start = time.monotonic()
    model.invoke("wait for me")
    assert time.monotonic() - start >= 0.01
    start = time.monotonic()
    chunks = list(model.stream("wait for me"))
    assert time.monotonic() - start >= 0.01
    assert len(chunks) > 1


async def test_fixed_latency_is_honoured_by_ainvoke_and_astream() -> None:
    model = SimulatedChatModel(latency=0.01)
    start = time.monotonic()
    await model.ainvoke("wait for me")
    assert time.monotonic() - start >= 0.01
    start = time.monotonic()
    first_at = None
    async for _ in model.astream("wait for me"):
        first_at = first_at or time.monotonic() - start
    assert time.monotonic() - start >= 0.01
    assert first_at is not None and first_at >= 0.003  # 30% before the first token


def test_latency_fn_overrides_fixed_latency_and_sees_the_messages() -> None:
    seen: list[list[BaseMessage]] = []

    def per_prompt(messages: list[BaseMessage]) -> float:
        seen.append(messages)
        return 0.01 if "slow" in str(messages[-1].content) else 0.0

    model = SimulatedChatModel(latency=30.0, latency_median=30.0, latency_fn=per_prompt)
    assert model.latency_for("fast one") == 0.0
    assert model.latency_for("slow one") == 0.01
    start = time.monotonic()
    model.invoke("slow one")
    assert time.monotonic() - start >= 0.01
    assert seen[-1][-1].content == "slow one"


# -- failures --------------------------------------------------------------------------


def test_fail_on_marker_raises_after_the_latency() -> None:
    model = SimulatedChatModel(latency=0.01, fail_on=("EXPLODE", "boom"))
    start = time.monotonic()
    with pytest.raises(SimulatedModelError, match="boom"):
        model.invoke("please go boom now")
    assert time.monotonic() - start >= 0.01
    with pytest.raises(SimulatedModelError, match="EXPLODE"):
        list(model.stream("EXPLODE"))
    assert isinstance(SimulatedModelError("x"), RuntimeError)


async def test_fail_on_marker_raises_in_async_paths() -> None:
    model = make(fail_on=("boom",))
    with pytest.raises(SimulatedModelError, match="boom"):
        await model.ainvoke("boom")
    with pytest.raises(SimulatedModelError, match="boom"):
        async for _ in model.astream("boom"):
            pass


def test_fail_on_only_looks_at_the_last_human_message() -> None:
    model = make(fail_on=("boom",))
    reply = model.invoke([SystemMessage("boom"), HumanMessage("boom?"), HumanMessage("calm")])
    assert isinstance(reply.content, str) and reply.content.startswith(REPLY_PREFIX)


# -- odd prompts -----------------------------------------------------------------------


async def test_braces_and_odd_unicode_in_prompts_do_not_break_anything() -> None:
    model = make()
    reply = model.invoke(ODD_PROMPT)
    assert isinstance(reply.content, str)
    assert reply.content.startswith(f"{REPLY_PREFIX} Fill {{name}} and {{{{literal}}}} }}{{")
    reply.content.encode("utf-8")  # lone surrogates were replaced
    assert summed(list(model.stream(ODD_PROMPT))).content == reply.content
    assert (await model.ainvoke(ODD_PROMPT)).content == reply.content
    assert model.invoke([HumanMessage(content=[{"type": "text", "text": "{block}"}])]).content


# -- tools and structured output -------------------------------------------------------


def test_with_structured_output_fills_a_nested_pydantic_model() -> None:
    model = make(seed=4)
    person = model.with_structured_output(Person).invoke("describe someone")
    assert isinstance(person, Person)
    assert isinstance(person.address, Address)
    assert 1 <= person.address.number <= 9
    assert len(person.previous) == 2 and all(isinstance(a, Address) for a in person.previous)
    assert isinstance(person.favourite, Colour)
    assert person.nickname == "simulated nickname"
    assert len(person.tags) == 3
    again = make(seed=4).with_structured_output(Person).invoke("describe someone")
    assert again == person


async def test_with_structured_output_accepts_a_dict_schema_and_include_raw() -> None:
    schema = {
        "title": "Verdict",
        "description": "A yes/no verdict.",
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["answer", "confidence"],
    }
    model = make()
    verdict: Any = model.with_structured_output(schema).invoke("is it?")
    assert verdict["answer"] in ("yes", "no")
    assert 0 <= verdict["confidence"] <= 1
    raw: Any = await model.with_structured_output(Person, include_raw=True).ainvoke("who?")
    assert raw["parsing_error"] is None
    assert isinstance(raw["parsed"], Person)
    call = raw["raw"].tool_calls[0]
    assert call["name"] == "Person"
    assert call["id"].startswith("call_sim_")
    assert Person.model_validate(call["args"]) == raw["parsed"]
    assert raw["raw"].content == ""


def test_streamed_tool_call_chunks_aggregate_to_the_invoked_tool_call() -> None:
    bound = make().bind_tools([Person, Address])
    reply = bound.invoke("call a tool")
    chunks = list(bound.stream("call a tool"))
    assert len(chunks) > 1
    total = summed(chunks)
    assert total.tool_calls == reply.tool_calls
    assert reply.tool_calls[0]["name"] == "Person"
    assert total.usage_metadata == reply.usage_metadata
    assert chunks[-1].usage_metadata is not None


def test_tool_choice_selects_the_named_tool_and_rejects_unknown_names() -> None:
    model = make()
    by_name = model.bind_tools([Person, Address], tool_choice="Address").invoke("x")
    assert by_name.tool_calls[0]["name"] == "Address"
    as_dict = {"type": "function", "function": {"name": "Address"}}
    assert model.bind_tools([Person, Address], tool_choice=as_dict).invoke("x").tool_calls
    text = model.bind_tools([Person], tool_choice="none").invoke("x")
    assert not text.tool_calls and str(text.content).startswith(REPLY_PREFIX)
    with pytest.raises(ValueError, match="Nope"):
        model.bind_tools([Person], tool_choice="Nope").invoke("x")


# -- sample_from_schema ----------------------------------------------------------------


def test_sample_from_schema_resolves_defs_and_definitions_refs() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"$ref": "#/definitions/B"}},
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "definitions": {"B": {"type": "string", "format": "date"}},
    }
    value = sample_from_schema(schema)
    assert isinstance(value["a"]["x"], int)
    assert value["b"] == "2024-01-01"
    assert Person.model_validate(sample_from_schema(Person.model_json_schema()))


def test_sample_from_schema_stops_recursive_refs() -> None:
    class Node(BaseModel):
        label: str
        children: list[Node] = []
        parent: Node | None = None

    value = sample_from_schema(Node.model_json_schema())
    Node.model_validate(value)
    depth, node = 0, value
    while node.get("children"):
        depth, node = depth + 1, node["children"][0]
    assert 1 <= depth <= 5
    json.dumps(value)


def test_sample_from_schema_enums_consts_and_type_lists() -> None:
    assert sample_from_schema({"enum": ["a", "b", "c"]}, seed=1) in ("a", "b", "c")
    assert sample_from_schema({"const": {"k": [1]}}) == {"k": [1]}
    assert sample_from_schema({"type": ["null", "integer"]}) is not None
    assert sample_from_schema({"type": "string", "default": "dflt"}) == "simulated value"
    assert sample_from_schema({"type": "string"}, name="title") == "simulated title"
    assert sample_from_schema({"type": "null"}) is None
    assert isinstance(sample_from_schema({"type": "boolean"}), bool)


def test_sample_from_schema_arrays_respect_item_bounds() -> None:
    assert sample_from_schema({"type": "array", "items": {"type": "string"}}, name="tag") == [
        "simulated tag 1",
        "simulated tag 2",
    ]
    assert len(sample_from_schema({"type": "array", "items": {}, "minItems": 5})) == 5
    assert len(sample_from_schema({"type": "array", "items": {}, "maxItems": 1})) == 1
    pair = sample_from_schema({"type": "array", "prefixItems": [{"type": "integer"}, {}]})
    assert isinstance(pair[0], int) and len(pair) == 2


def test_sample_from_schema_anyof_oneof_and_allof() -> None:
    assert sample_from_schema({"anyOf": [{"type": "null"}, {"type": "integer"}]}) is not None
    assert isinstance(sample_from_schema({"oneOf": [{"type": "string"}, {"type": "integer"}]}), str)
    merged = sample_from_schema(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"properties": {"b": {"type": "string"}}},
            ]
        }
    )
    assert set(merged) == {"a", "b"}


def test_sample_from_schema_numbers_strings_and_formats_meet_constraints() -> None:
    for seed in range(20):
        n = sample_from_schema({"type": "integer", "minimum": 3, "exclusiveMaximum": 5}, seed=seed)
        assert n in (3, 4)
        x = sample_from_schema({"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}, seed=seed)
        assert 0 < x <= 0.5
    assert len(sample_from_schema({"type": "string", "minLength": 40})) == 40
    assert len(sample_from_schema({"type": "string", "maxLength": 4})) == 4
    assert "@" in sample_from_schema({"type": "string", "format": "email"})
    assert sample_from_schema({"type": "string", "format": "uri"}).startswith("https://")
    assert "T" in sample_from_schema({"type": "string", "format": "date-time"})
    obj = sample_from_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    assert obj and all(isinstance(v, int) for v in obj.values())


def test_sample_from_schema_is_deterministic_per_seed() -> None:
    schema = Person.model_json_schema()
    assert sample_from_schema(schema, seed=9) == sample_from_schema(schema, seed=9)
    draws = {json.dumps(sample_from_schema(schema, seed=s), sort_keys=True) for s in range(5)}
    assert len(draws) > 1
