"""The splitter kinds: split_text (headings, then size) and split_rows (CSV / JSON Lines)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from fanfold import InvalidOptionsError, SubTask, compile_plan
from fanfold.nodes import SubtaskCall, node_kinds
from fanfold.nodes.splitters import (
    SplitInputError,
    estimate_tokens,
    run_split_text,
    split_rows,
    split_text,
)

PROSE = (
    "The committee met on Tuesday to review the proposal for a new library in the town "
    "centre. Several members argued that the existing building could be renovated at a "
    "lower cost, while others pointed out that it no longer met accessibility standards. "
    "After a long discussion, the chair asked the planning office to prepare two detailed "
    "estimates, one for each option, before the next meeting in March. Residents who wish "
    "to comment may write to the council or attend the public session, which will be held "
    "in the main hall of the school."
)
# What OpenAI's cl100k_base and o200k_base tokenizers make of PROSE (measured offline).
PROSE_GPT_TOKENS = 102


def run_splitter(kind: str, inputs: dict[str, Any], *, prompt: str = "{doc}", **options: Any):
    """Compile a one-subtask plan and run it; return the subtask's result."""
    plan = {
        "task": "Split a document",
        "subtasks": [{"id": "split", "kind": kind, "prompt": prompt, "options": options}],
    }
    state = compile_plan(plan, model="simulated", aggregator=None).invoke({"inputs": inputs})
    return state["results"]["split"]


def shared_text(a: str, b: str) -> str:
    """The longest end of `a` that `b` starts with."""
    for size in range(min(len(a), len(b)), 0, -1):
        if b.startswith(a[-size:]):
            return a[-size:]
    return ""


def sentences(count: int) -> str:
    """`count` distinct numbered sentences, so every piece's place can be checked."""
    return " ".join(
        f"Sentence number {i} talks about topic {i * 7} at some length." for i in range(count)
    )


# -- estimate_tokens -----------------------------------------------------------------------


def test_token_estimate_is_close_to_a_gpt_tokenizer_for_english_prose() -> None:
    assert abs(estimate_tokens(PROSE) - PROSE_GPT_TOKENS) <= 0.05 * PROSE_GPT_TOKENS


def test_token_estimate_counts_long_words_and_numbers_in_parts_and_ignores_whitespace() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens(" \n\t ") == 0
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("a" * 25) == 3
    assert estimate_tokens("1234567") == 3
    assert estimate_tokens("中文测试") == 4


# -- split_text: headings ------------------------------------------------------------------


def test_text_without_headings_is_one_piece_with_an_empty_heading_path() -> None:
    pieces = split_text("First paragraph.\n\nSecond paragraph.\n")
    assert pieces == [
        {"text": "First paragraph.\n\nSecond paragraph.", "headings": [], "tokens": 6}
    ]


def test_text_before_the_first_heading_has_an_empty_heading_path() -> None:
    pieces = split_text("Preface words.\n\n# Chapter\nChapter words.\n")
    assert [(p["text"], p["headings"]) for p in pieces] == [
        ("Preface words.", []),
        ("# Chapter\nChapter words.", ["Chapter"]),
    ]


def test_blank_lines_before_the_first_heading_make_no_piece() -> None:
    pieces = split_text("\n\n  \n# Only\nBody.\n")
    assert [p["headings"] for p in pieces] == [["Only"]]


def test_each_heading_starts_a_piece_whose_path_runs_from_the_top_heading_down() -> None:
    doc = (
        "# Guide\nAbout the guide.\n"
        "## Install\nHow to install.\n"
        "### On Linux\nUse apt.\n"
        "## Use\nHow to use.\n"
        "# Appendix\nExtra.\n"
    )
    assert [p["headings"] for p in split_text(doc)] == [
        ["Guide"],
        ["Guide", "Install"],
        ["Guide", "Install", "On Linux"],
        ["Guide", "Use"],
        ["Appendix"],
    ]


def test_a_skipped_heading_level_keeps_the_headings_above_it_in_the_path() -> None:
    pieces = split_text("# Top\nText.\n### Deep\nMore.\n## Middle\nLast.\n")
    assert [p["headings"] for p in pieces] == [["Top"], ["Top", "Deep"], ["Top", "Middle"]]


def test_small_adjacent_sections_are_not_merged() -> None:
    pieces = split_text("## A\none\n## B\ntwo\n## C\nthree\n", max_tokens=500)
    assert [p["text"] for p in pieces] == ["## A\none", "## B\ntwo", "## C\nthree"]


def test_a_heading_followed_directly_by_a_subheading_stays_on_top_of_the_subsection() -> None:
    pieces = split_text("# Book\n## Part one\nText of part one.\n## Part two\nMore.\n")
    assert [(p["text"], p["headings"]) for p in pieces] == [
        ("# Book\n## Part one\nText of part one.", ["Book", "Part one"]),
        ("## Part two\nMore.", ["Book", "Part two"]),
    ]


def test_an_empty_section_followed_by_a_sibling_is_still_its_own_piece() -> None:
    pieces = split_text("## Todo\n## Done\nShipped.\n")
    assert [p["headings"] for p in pieces] == [["Todo"], ["Done"]]


def test_hash_lines_inside_fenced_code_blocks_are_not_headings() -> None:
    doc = (
        "# Script\n"
        "```bash\n# install the tool\npip install tool\n```\n"
        "~~~~\n## still code\n```\n# still code too\n~~~~\n"
        "# After\nDone.\n"
    )
    pieces = split_text(doc)
    assert [p["headings"] for p in pieces] == [["Script"], ["After"]]
    assert "# install the tool" in pieces[0]["text"]
    assert "# still code too" in pieces[0]["text"]


def test_an_unclosed_fence_runs_to_the_end_of_the_document() -> None:
    pieces = split_text("# Code\n```\n# comment\n# another\n")
    assert [p["headings"] for p in pieces] == [["Code"]]


def test_closing_hashes_are_dropped_and_hashtags_or_indented_hashes_are_not_headings() -> None:
    doc = "## Usage ##\n#hashtag is text\n    # indented code\n####### seven is text\n"
    pieces = split_text(doc)
    assert len(pieces) == 1
    assert pieces[0]["headings"] == ["Usage"]


def test_windows_line_endings_are_read_as_line_breaks() -> None:
    pieces = split_text("# One\r\nFirst.\r\n# Two\r\nSecond.\r\n")
    assert [(p["text"], p["headings"]) for p in pieces] == [
        ("# One\nFirst.", ["One"]),
        ("# Two\nSecond.", ["Two"]),
    ]


# -- split_text: size ----------------------------------------------------------------------


def test_a_large_section_is_cut_into_overlapping_pieces_within_max_tokens() -> None:
    doc = "# Report\n" + "\n\n".join(sentences(6) for _ in range(8)).replace("number 3", "n 3")
    pieces = split_text(doc, max_tokens=60, overlap=15)

    assert len(pieces) > 3
    for piece in pieces:
        assert piece["headings"] == ["Report"]
        assert piece["tokens"] == estimate_tokens(piece["text"]) <= 60
        assert piece["text"] in doc
    for before, after in zip(pieces, pieces[1:], strict=False):
        overlap = shared_text(before["text"], after["text"])
        assert 1 <= estimate_tokens(overlap) <= 15, (before["text"], after["text"])
    assert doc.endswith(pieces[-1]["text"])
    assert doc.startswith(pieces[0]["text"])


def test_every_part_of_a_large_section_lands_in_some_piece() -> None:
    doc = sentences(40)
    pieces = split_text(doc, max_tokens=50, overlap=10)
    for i in range(40):
        assert any(f"Sentence number {i} talks" in p["text"] for p in pieces), i


def test_without_overlap_the_pieces_put_back_together_are_the_section() -> None:
    paragraphs = [sentences(n) for n in (2, 3, 1, 4, 2, 3)]
    doc = "\n\n".join(paragraphs)
    pieces = split_text(doc, max_tokens=80, overlap=0)
    assert len(pieces) > 1
    assert "\n\n".join(p["text"] for p in pieces) == doc


def test_a_size_split_ends_pieces_at_paragraph_breaks_when_it_can() -> None:
    # Paragraphs of several lines, so a line break is always nearer the limit than a
    # paragraph break.
    paragraphs = [
        "\n".join(f"Line {j} of paragraph {i} says a little." for j in range(5)) for i in range(8)
    ]
    pieces = split_text("\n\n".join(paragraphs), max_tokens=80, overlap=0)
    assert len(pieces) > 1
    for piece in pieces:
        assert any(piece["text"].endswith(p) for p in paragraphs), piece["text"]
        assert any(piece["text"].startswith(p) for p in paragraphs), piece["text"]


def test_a_paragraph_longer_than_max_tokens_is_cut_at_sentence_ends() -> None:
    pieces = split_text(sentences(20), max_tokens=45, overlap=0)
    assert len(pieces) > 1
    assert all(p["text"].endswith("length.") for p in pieces)


def test_a_sentence_ending_inside_quotes_or_brackets_is_a_sentence_end() -> None:
    text = " ".join(f'Speaker {i} said "we leave at {i} today." (Noted.)' for i in range(30))
    pieces = split_text(text, max_tokens=37, overlap=0)  # each sentence is 15 tokens
    assert len(pieces) > 1
    assert all(p["text"].endswith(".)") for p in pieces), [p["text"][-12:] for p in pieces]


def test_a_sentence_longer_than_max_tokens_is_cut_between_words() -> None:
    words = [f"w{i}" for i in range(300)]
    pieces = split_text(" ".join(words), max_tokens=40, overlap=5)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece["tokens"] <= 40
        assert set(piece["text"].split()) <= set(words)


def test_a_word_longer_than_max_tokens_is_cut_inside_it() -> None:
    word = "abcdefghij" * 30
    pieces = split_text(word, max_tokens=4, overlap=0)
    assert all(p["tokens"] <= 4 for p in pieces)
    assert "".join(p["text"] for p in pieces) == word


def test_a_piece_that_starts_on_an_indented_line_keeps_the_indent() -> None:
    lines = [f"    line {i} of the indented block" for i in range(30)]
    pieces = split_text("\n".join(lines), max_tokens=30, overlap=0)
    assert len(pieces) > 1
    assert all(p["text"].startswith("    line") for p in pieces)


def test_braces_and_json_in_the_text_are_kept_verbatim() -> None:
    doc = '# Config\nSet {"retries": {"max": 3}} and keep {name} and {{double}} as they are.\n'
    [piece] = split_text(doc)
    assert piece["text"] == doc.strip()


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_empty_text_is_an_error_naming_the_source(text: str) -> None:
    with pytest.raises(SplitInputError, match="input 'doc' is empty") as caught:
        split_text(text, source="input 'doc'")
    assert caught.value.source == "input 'doc'"


# -- split_rows ----------------------------------------------------------------------------


def numbered_csv(count: int) -> str:
    return "id,name\n" + "".join(f"{i},item {i}\n" for i in range(1, count + 1))


def test_rows_come_in_partitions_of_n_with_a_shorter_last_one() -> None:
    parts = split_rows(numbered_csv(7), rows=3)
    assert [(p["first_row"], p["last_row"]) for p in parts] == [(1, 3), (4, 6), (7, 7)]
    assert [[r["id"] for r in p["rows"]] for p in parts] == [
        ["1", "2", "3"],
        ["4", "5", "6"],
        ["7"],
    ]
    assert parts[2]["rows"] == [{"id": "7", "name": "item 7"}]


def test_a_multiple_of_n_rows_has_no_empty_last_partition() -> None:
    parts = split_rows(numbered_csv(6), rows=3)
    assert [len(p["rows"]) for p in parts] == [3, 3]


def test_fewer_rows_than_n_make_one_partition() -> None:
    [part] = split_rows(numbered_csv(2), rows=100)
    assert (part["first_row"], part["last_row"], len(part["rows"])) == (1, 2, 2)


def test_csv_quoted_fields_keep_their_commas_quotes_and_line_breaks() -> None:
    text = 'name,quote\n"Smith, John","He said ""hi""\nand left"\nplain,"a, b, c"\n'
    [part] = split_rows(text)
    assert part["rows"] == [
        {"name": "Smith, John", "quote": 'He said "hi"\nand left'},
        {"name": "plain", "quote": "a, b, c"},
    ]


def test_a_byte_order_mark_is_not_part_of_the_first_column_name() -> None:
    [part] = split_rows("\ufeffid,name\n1,x\n")
    assert part["rows"] == [{"id": "1", "name": "x"}]


def test_a_semicolon_delimited_csv_is_sniffed() -> None:
    [part] = split_rows("city;country\nParis;France\nLima;Peru\n")
    assert part["rows"][1] == {"city": "Lima", "country": "Peru"}


def test_a_delimiter_found_only_inside_fields_is_not_taken_for_the_delimiter() -> None:
    # csv.Sniffer alone takes ";" for the delimiter here.
    text = "id,notes\n1,'a';'b'\n2,'c';'d'\n"
    [part] = split_rows(text)
    assert part["rows"] == [{"id": "1", "notes": "'a';'b'"}, {"id": "2", "notes": "'c';'d'"}]


def test_json_lines_are_detected_and_blank_lines_skipped() -> None:
    lines = [{"id": i, "tags": ["x", {"nested": i}]} for i in range(5)]
    text = (
        "\n".join(json.dumps(r) for r in lines[:2])
        + "\n\n"
        + "\n".join(json.dumps(r) for r in lines[2:])
    )
    parts = split_rows(text, rows=2)
    assert [p["rows"] for p in parts] == [lines[0:2], lines[2:4], lines[4:]]
    assert [(p["first_row"], p["last_row"]) for p in parts] == [(1, 2), (3, 4), (5, 5)]


def test_format_csv_reads_a_line_starting_with_a_brace_as_csv() -> None:
    [part] = split_rows("{col}\nvalue\n", format="csv")
    assert part["rows"] == [{"{col}": "value"}]


def test_a_csv_row_with_more_fields_than_the_header_names_its_line() -> None:
    text = "a,b\n1,2\n3,4,5\n"
    with pytest.raises(SplitInputError, match=r"line 3 of input 'rows' .*3 fields.*header has 2"):
        split_rows(text, source="input 'rows'")


def test_a_csv_row_with_fewer_fields_than_the_header_is_an_error() -> None:
    with pytest.raises(SplitInputError, match=r"line 2 .*1 fields but the header has 2"):
        split_rows("a,b\n1\n3,4\n")


def test_an_unterminated_csv_quote_names_the_line_where_its_row_starts() -> None:
    text = 'a,b\n1,2\n3,"never closed\n4,5\n'
    with pytest.raises(SplitInputError, match="line 3 of input 'rows'") as caught:
        split_rows(text, source="input 'rows'")
    assert caught.value.line == 3


def test_text_after_a_closing_quote_in_a_csv_field_is_an_error() -> None:
    with pytest.raises(SplitInputError, match="line 2 of input 'rows' starts a row that is not"):
        split_rows('a,b\n"x"y,2\n', source="input 'rows'")


def test_a_malformed_json_line_names_its_line_number() -> None:
    text = '{"a": 1}\n\n{"a": 2,}\n'
    with pytest.raises(SplitInputError, match="line 3 of input 'rows' is not valid JSON"):
        split_rows(text, source="input 'rows'")


def test_a_json_line_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(SplitInputError, match="line 2 .* JSON list, not an object"):
        split_rows('{"a": 1}\n[1, 2]\n')


def test_a_header_naming_a_column_twice_is_an_error() -> None:
    with pytest.raises(SplitInputError, match="line 1 .*'a' twice"):
        split_rows("a,b,a\n1,2,3\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "input 'rows' is empty"),
        ("\n \n", "input 'rows' is empty"),
        ("id,name\n", "input 'rows' has a header but no data rows"),
        ("id,name\n\n", "input 'rows' has a header but no data rows"),
    ],
)
def test_input_without_data_rows_is_an_error_naming_the_source(text: str, message: str) -> None:
    with pytest.raises(SplitInputError, match=message):
        split_rows(text, source="input 'rows'")


# -- the kinds, end to end -----------------------------------------------------------------


def test_split_text_kind_splits_a_run_input() -> None:
    doc = "Intro.\n# A\nAlpha text.\n## B\nBeta text.\n"
    result = run_splitter("split_text", {"doc": doc})
    assert result.status == "succeeded", result.error
    assert [(p["text"], p["headings"]) for p in result.output] == [
        ("Intro.", []),
        ("# A\nAlpha text.", ["A"]),
        ("## B\nBeta text.", ["A", "B"]),
    ]


def test_split_text_kind_uses_its_size_options() -> None:
    result = run_splitter("split_text", {"doc": sentences(30)}, max_tokens=40, overlap=8)
    assert result.status == "succeeded", result.error
    assert len(result.output) > 3
    assert all(p["tokens"] <= 40 for p in result.output)


def test_split_text_kind_keeps_braces_and_json_from_the_input_verbatim() -> None:
    doc = 'Payload: {"user": {"id": 7}} with {doc} and {{x}} inside.'
    result = run_splitter("split_text", {"doc": doc})
    assert result.output[0]["text"] == doc


def test_split_rows_kind_partitions_csv_from_a_run_input() -> None:
    result = run_splitter("split_rows", {"doc": numbered_csv(5)}, rows=2)
    assert result.status == "succeeded", result.error
    assert [(p["first_row"], p["last_row"]) for p in result.output] == [(1, 2), (3, 4), (5, 5)]
    assert result.output[1]["rows"][0] == {"id": "3", "name": "item 3"}


def test_split_rows_kind_reads_json_lines() -> None:
    text = '{"q": "a {b} c"}\n{"q": "d"}\n'
    result = run_splitter("split_rows", {"doc": text}, format="jsonl")
    assert result.output == [
        {"rows": [{"q": "a {b} c"}, {"q": "d"}], "first_row": 1, "last_row": 2}
    ]


def test_empty_input_fails_the_subtask_naming_the_input_and_the_subtask() -> None:
    result = run_splitter("split_text", {"doc": "  \n"})
    assert result.status == "failed"
    assert "SplitInputError" in result.error
    assert "input 'doc' of subtask 'split' is empty" in result.error


def test_malformed_json_lines_fail_at_once_naming_the_input_and_the_line() -> None:
    result = run_splitter("split_rows", {"doc": '{"a": 1}\n{"a": \n'})
    assert result.status == "failed"
    assert "line 2 of input 'doc' of subtask 'split'" in result.error
    assert result.attempts == 1  # a parse error is not retried like a network error


def test_malformed_csv_fails_the_subtask_naming_the_input_and_the_line() -> None:
    result = run_splitter("split_rows", {"doc": "a,b\n1,2\n3,4,5\n"})
    assert result.status == "failed"
    assert "line 3 of input 'doc' of subtask 'split'" in result.error


def test_a_prompt_that_is_not_one_placeholder_is_named_as_the_subtask_prompt() -> None:
    result = run_splitter("split_rows", {"doc": ""}, prompt="id,name\n{doc}")
    assert result.status == "failed"
    assert "the prompt of subtask 'split'" in result.error


def test_splitting_a_dependency_output_names_that_subtask() -> None:
    plan = {
        "task": "t",
        "subtasks": [
            {"id": "fetch", "kind": "template", "prompt": "{doc}"},
            {"id": "split", "kind": "split_text", "prompt": "{fetch}", "depends_on": ["fetch"]},
        ],
    }
    state = compile_plan(plan, model="simulated", aggregator=None).invoke({"inputs": {"doc": ""}})
    error = state["results"]["split"].error
    assert error is not None and "output of subtask 'fetch'" in error


def test_a_map_item_being_split_is_named_as_the_item() -> None:
    sub = SubTask(id="cut", kind="split_text", prompt="{item}", map="docs")
    call = SubtaskCall(
        subtask=sub,
        task="t",
        prompt=" ",
        messages=[],
        dependencies={},
        inputs={},
        model=None,
        config={},
    )
    with pytest.raises(SplitInputError, match="the item of 'docs' that subtask 'cut' splits"):
        run_split_text(call)


@pytest.mark.parametrize(
    ("kind", "options", "option", "message"),
    [
        ("split_text", {"max_token": 100}, "max_token", "did you mean 'max_tokens'"),
        ("split_text", {"overlapp": 5}, "overlapp", "did you mean 'overlap'"),
        ("split_text", {"size": 5}, "size", "the options are max_tokens, overlap"),
        ("split_text", {"max_tokens": 0}, "max_tokens", "at least 1, not 0"),
        ("split_text", {"max_tokens": "500"}, "max_tokens", "whole number"),
        ("split_text", {"max_tokens": True}, "max_tokens", "whole number"),
        ("split_text", {"overlap": -1}, "overlap", "at least 0"),
        ("split_text", {"max_tokens": 100, "overlap": 100}, "overlap", "less than max_tokens"),
        ("split_text", {"overlap": 600}, "overlap", r"less than max_tokens \(500\)"),
        ("split_rows", {"row": 10}, "row", "did you mean 'rows'"),
        ("split_rows", {"rows": 0}, "rows", "at least 1"),
        ("split_rows", {"rows": 2.5}, "rows", "whole number"),
        ("split_rows", {"format": "json"}, "format", "did you mean 'jsonl'"),
        ("split_rows", {"format": "xml"}, "format", "use 'auto', 'csv' or 'jsonl'"),
    ],
)
def test_bad_options_are_rejected_when_the_plan_is_compiled(
    kind: str, options: dict[str, Any], option: str, message: str
) -> None:
    plan = {
        "task": "t",
        "subtasks": [{"id": "cut", "kind": kind, "prompt": "{doc}", "options": options}],
    }
    with pytest.raises(InvalidOptionsError, match=message) as caught:
        compile_plan(plan, model="simulated", aggregator=None)
    assert caught.value.subtask_id == "cut"
    assert caught.value.option == option
    assert re.search(r"subtask 'cut'", str(caught.value))


def test_the_splitters_are_registered_without_a_model_and_with_descriptions() -> None:
    for name in ("split_text", "split_rows"):
        kind = node_kinds.get(name)
        assert kind.needs_model is False
        assert kind.description
