"""Token usage arithmetic (frozen: adding zero returns the other side, building nothing),
and results as the plain data kept in graph state."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fanfold import TokenUsage
from fanfold.state.results import NO_USAGE, ResultData, SubtaskResult, total_usage


def test_adding_usages_adds_each_count_and_fills_a_missing_total() -> None:
    a = TokenUsage(input_tokens=3, output_tokens=4)
    b = TokenUsage(input_tokens=1, output_tokens=2, total_tokens=10)
    assert a + b == TokenUsage(input_tokens=4, output_tokens=6, total_tokens=17)
    assert a + TokenUsage() == a == TokenUsage() + a
    assert a + TokenUsage() is a and TokenUsage() + a is a
    assert TokenUsage() + TokenUsage() == TokenUsage(total_tokens=0)
    built = TokenUsage.model_construct(input_tokens=2, output_tokens=5, total_tokens=0)
    assert (built + built).total_tokens == 14
    assert sum([a, b, a], TokenUsage()).model_dump() == {
        "input_tokens": 7,
        "output_tokens": 10,
        "total_tokens": 24,
    }


def test_usage_from_metadata_is_the_validated_usage() -> None:
    for metadata in (
        None,
        {},
        {"input_tokens": 5, "output_tokens": 7},
        {"input_tokens": 5, "output_tokens": 7, "total_tokens": 20},
        {"input_tokens": "5", "output_tokens": 7.0, "total_tokens": None},
    ):
        got = TokenUsage.from_metadata(metadata)
        inp = int((metadata or {}).get("input_tokens") or 0)
        out = int((metadata or {}).get("output_tokens") or 0)
        total = (metadata or {}).get("total_tokens") or 0
        want = TokenUsage(input_tokens=inp, output_tokens=out, total_tokens=total)
        assert got == want
        assert type(got.total_tokens) is int
        assert got.model_fields_set <= want.model_fields_set | {"total_tokens"}


def test_total_usage_is_the_sum_of_the_usages_built_once() -> None:
    a = TokenUsage(input_tokens=3, output_tokens=4)
    b = TokenUsage(input_tokens=1, output_tokens=2, total_tokens=10)
    built = TokenUsage.model_construct(input_tokens=2, output_tokens=5, total_tokens=0)
    for usages in ([], [a], [a, b, a], [built, built], [TokenUsage(), TokenUsage()]):
        assert total_usage(usages) == sum(usages, TokenUsage())
    assert total_usage([]) is NO_USAGE
    assert total_usage(iter([a, b])) == a + b


class Shape(BaseModel):
    name: str
    sides: int


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "succeeded", "output": "text", "usage": TokenUsage(input_tokens=3)},
        {"status": "succeeded", "output": 7, "priority": 3, "started_at": 1, "cost": 0},
        {"status": "failed", "error": "boom", "attempts": 2, "cost_source": "mixed"},
        {"status": "skipped", "error": "dependency 'a' failed", "output": None},
        {"status": "succeeded", "output": Shape(name="square", sides=4)},
        {"status": "succeeded", "output": {"shape": Shape(name="t", sides=3), "n": [1]}},
        {"status": "succeeded", "output": ["x", "y"], "index": 2, "kind": "llm"},
        {"status": "succeeded", "output": "hit", "cached": True, "cached_usage": TokenUsage()},
        {"status": "succeeded", "output": "b", "batch": {"id": "batch_1", "status": "done"}},
        {
            "status": "succeeded",
            "output": ["a"],
            "items": [SubtaskResult(id="m[0]", status="succeeded", output="a", index=0)],
        },
    ],
)
def test_a_result_as_state_is_its_plain_dump_and_keeps_the_result(fields: dict) -> None:
    result = SubtaskResult(id="m", **fields)
    data = result.to_state()
    dumped = result.model_dump()
    assert data == dumped
    assert list(data) == list(dumped)
    assert type(data["usage"]) is dict
    assert isinstance(data, ResultData) and data.typed is result
    assert SubtaskResult.model_validate(data) == result.model_validate(dumped)
