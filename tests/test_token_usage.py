"""Token usage arithmetic (frozen: adding zero returns the other side, building nothing)."""

from __future__ import annotations

from fanfold import TokenUsage


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
