"""The three Parallelization recipes in examples/: they run, fan out and fan back in.

Each recipe is run on its sample input with the simulated model, and checked for what
the recipe promises: one map item per section, partition or outline entry, a combining
step that sees every item's output in item order, and a run faster than the same calls
one after another. Every recipe is also run through the CLI with the exact command its
plan's header comment gives.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import runpy
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from typer.testing import CliRunner

import fanfold
from fanfold import SimulatedChatModel, SubtaskResult, TaskPlan
from fanfold.cli import app
from fanfold.nodes.splitters import split_rows, split_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOC_PLAN = EXAMPLES / "document_analysis" / "plan.yaml"
DOC_FILE = EXAMPLES / "document_analysis" / "incident_review.md"
DATA_PLAN = EXAMPLES / "data_processing" / "plan.yaml"
DATA_FILE = EXAMPLES / "data_processing" / "orders.csv"
DATA_GENERATOR = EXAMPLES / "data_processing" / "make_orders.py"
CONTENT_PLAN = EXAMPLES / "content_generation" / "plan.yaml"

# Per-call latency large next to the scheduling overhead, so parallel vs. sequential
# is decided by the plan's shape and not by noise.
LATENCY_MEDIAN = 0.05


@dataclass
class Recipe:
    """One example plan: its file, run inputs, and the ids of its three steps."""

    name: str
    plan: Path
    inputs: dict[str, str]
    source: str  # the list the map runs over: a splitter subtask or a run input
    map: str
    combine: str
    cli_inputs: list[str] = field(default_factory=list)


RECIPES = [
    Recipe(
        "document_analysis",
        DOC_PLAN,
        {"doc": DOC_FILE.read_text(encoding="utf-8")},
        source="sections",
        map="analyse",
        combine="combine",
        cli_inputs=["-i", f"doc=@{DOC_FILE}"],
    ),
    Recipe(
        "data_processing",
        DATA_PLAN,
        {"data": DATA_FILE.read_text(encoding="utf-8")},
        source="partitions",
        map="process",
        combine="merge",
        cli_inputs=["-i", f"data=@{DATA_FILE}"],
    ),
    Recipe("content_generation", CONTENT_PLAN, {}, source="outline", map="write", combine="edit"),
]
BY_NAME = {recipe.name: recipe for recipe in RECIPES}


class PromptLog:
    """A SimulatedChatModel `latency_fn` that records every call's messages.

    It returns the latency the simulated model would draw itself, so recording changes
    nothing about the run.
    """

    def __init__(self, median: float) -> None:
        self._model = SimulatedChatModel(latency_median=median)
        self.calls: list[list[BaseMessage]] = []

    def __call__(self, messages: list[BaseMessage]) -> float:
        self.calls.append(list(messages))
        return self._model.latency_for(messages)

    def prompts(self) -> list[str]:
        """The human message of every call, in the order the calls started."""
        return [str([m for m in call if m.type == "human"][-1].content) for call in self.calls]

    def prompt_starting(self, prefix: str) -> str:
        """The one prompt that starts with `prefix`."""
        found = [p for p in self.prompts() if p.startswith(prefix)]
        assert len(found) == 1, f"expected one prompt starting {prefix!r}, got {len(found)}"
        return found[0]


@dataclass
class Run:
    state: dict[str, Any]
    log: PromptLog
    plan: TaskPlan

    @property
    def results(self) -> dict[str, SubtaskResult]:
        results: dict[str, SubtaskResult] = self.state["results"]
        return results

    @property
    def totals(self) -> fanfold.RunTotals:
        totals: fanfold.RunTotals = self.state["totals"]
        return totals


def run_recipe(recipe: Recipe) -> Run:
    log = PromptLog(LATENCY_MEDIAN)
    model = SimulatedChatModel(latency_median=LATENCY_MEDIAN, latency_fn=log)
    graph = fanfold.compile_plan(recipe.plan, model=model)
    state = graph.invoke({"inputs": recipe.inputs})
    return Run(state=state, log=log, plan=graph.plan)


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    """Each recipe run once; the tests below read the same runs."""
    return {recipe.name: run_recipe(recipe) for recipe in RECIPES}


def assert_items_in_order(prompt: str, map_id: str, items: Sequence[SubtaskResult]) -> None:
    """`prompt` shows every item's output under its own header, in item order."""
    positions = []
    for index, item in enumerate(items):
        block = f"#### {map_id}[{index}]\n{item.output}"
        assert block in prompt, f"{map_id}[{index}]'s output is missing from the prompt"
        positions.append(prompt.index(block))
    assert positions == sorted(positions), "the items' outputs are out of order"
    assert f"#### {map_id}[{len(items)}]" not in prompt


def item_in(prompt: str, label: str) -> Any:
    """The map item a prompt carries: the JSON after `label`, which ends the prompt."""
    assert prompt.count(label) == 1, f"{label!r} is not in the prompt once"
    return json.loads(prompt.split(label, 1)[1])


def plan_options(plan: TaskPlan, sid: str) -> dict[str, Any]:
    return dict(plan.subtask(sid).options)


# -- every recipe --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_subtask_and_every_map_item_succeeds(runs, name):
    run = runs[name]
    assert [run.results[sid].status for sid in run.plan.ids] == ["succeeded"] * len(run.plan.ids)
    items = run.results[BY_NAME[name].map].items
    assert items is not None and len(items) > 1
    assert all(item.ok for item in items)
    assert run.state["aggregate_error"] is None
    assert isinstance(run.state["output"], str) and run.state["output"]
    assert run.totals.succeeded == len(run.plan.ids)
    assert (run.totals.failed, run.totals.skipped) == (0, 0)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_the_combining_step_receives_every_item_output_in_item_order(runs, name):
    recipe, run = BY_NAME[name], runs[name]
    items = run.results[recipe.map].items
    assert items is not None
    assert [item.id for item in items] == [f"{recipe.map}[{i}]" for i in range(len(items))]
    outputs = [item.output for item in items]
    assert len(set(outputs)) == len(outputs), "every item had a prompt of its own"
    first_line = run.plan.subtask(recipe.combine).prompt.splitlines()[0]
    assert_items_in_order(run.log.prompt_starting(first_line), recipe.map, items)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_parallel_run_beats_running_the_same_calls_one_after_another(runs, name):
    recipe, run = BY_NAME[name], runs[name]
    totals = run.totals
    durations: list[float] = []
    for result in run.results.values():
        for call in result.items if result.items is not None else [result]:
            assert call.duration is not None
            durations.append(call.duration)
    # The sequential time is every call's duration, the aggregation's call included.
    assert sum(durations) < totals.call_time < sum(durations) + totals.wall_time
    map_result = run.results[recipe.map]
    assert map_result.items is not None and map_result.duration is not None
    # Items count one by one: together they took longer than the map's own span.
    assert sum(i.duration or 0.0 for i in map_result.items) > map_result.duration
    assert totals.items == len(map_result.items)
    # The items ran at the same time: the last one started before the first one finished.
    starts = [i.started_at for i in map_result.items if i.started_at is not None]
    ends = [i.finished_at for i in map_result.items if i.finished_at is not None]
    assert max(starts) < min(ends)
    assert totals.speedup is not None and totals.speedup > 1


def header_command(plan: Path) -> list[str]:
    """The `fanfold run ...` command in the plan's header comment, as arguments."""
    for line in plan.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        command = line.lstrip("# ")
        if command.startswith("fanfold run "):
            return shlex.split(command)[1:]
    raise AssertionError(f"{plan} has no `fanfold run` command in its header comment")


@pytest.mark.parametrize("name", list(BY_NAME))
def test_the_command_in_the_plan_header_runs_offline_and_exits_0(name, monkeypatch):
    recipe = BY_NAME[name]
    args = header_command(recipe.plan)
    assert args[:2] == ["run", str(recipe.plan.relative_to(ROOT))]
    assert "simulated" in args
    monkeypatch.chdir(ROOT)  # the command's paths are relative to the repository
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    count = len(TaskPlan.from_file(recipe.plan).ids)
    assert f"{count} succeeded, 0 failed, 0 skipped" in result.stdout
    progress = [line.split()[-1] for line in result.stderr.splitlines() if line.strip()]
    assert sorted(progress) == sorted([*TaskPlan.from_file(recipe.plan).ids, "aggregate"])


@pytest.mark.parametrize("name", list(BY_NAME))
def test_cli_json_run_reports_every_item_and_a_speedup_above_1(name):
    recipe = BY_NAME[name]
    args = ["run", str(recipe.plan), "--model", "simulated", *recipe.cli_inputs, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {sid: r["status"] for sid, r in payload["results"].items()} == {
        sid: "succeeded" for sid in TaskPlan.from_file(recipe.plan).ids
    }
    items = payload["results"][recipe.map]["items"]
    assert len(items) > 1
    assert [item["index"] for item in items] == list(range(len(items)))
    totals = payload["totals"]
    assert totals["items"] == len(items)
    assert totals["call_time"] / totals["wall_time"] > 1


# -- document analysis ---------------------------------------------------------------------


def test_document_analysis_maps_once_per_section_the_splitter_makes(runs):
    run = runs["document_analysis"]
    options = plan_options(run.plan, "sections")
    pieces = split_text(DOC_FILE.read_text(encoding="utf-8"), **options)
    assert run.results["sections"].output == pieces
    analyse = run.results["analyse"].items
    assert analyse is not None and len(analyse) == len(pieces)
    # Every heading of the document heads at least one section, and so one analysis.
    headings = re.findall(r"^#+ (.+)$", DOC_FILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert {title for piece in pieces for title in piece["headings"]} == set(headings)
    assert len(pieces) > 5
    assert all(piece["tokens"] <= options["max_tokens"] for piece in pieces)


def test_document_analysis_gives_each_analysis_exactly_its_own_section(runs):
    run = runs["document_analysis"]
    pieces = run.results["sections"].output
    for index, piece in enumerate(pieces):
        prompt = run.log.prompt_starting(f"Section {index} of the document,")
        headings, _, text = prompt.partition("The section:\n\n")
        assert text == piece["text"] + "\n"  # verbatim (the YAML block ends with a newline)
        assert json.dumps(piece["headings"], indent=2, ensure_ascii=False) in headings


# -- data processing -----------------------------------------------------------------------


def test_data_processing_maps_once_per_partition_the_splitter_makes(runs):
    run = runs["data_processing"]
    options = plan_options(run.plan, "partitions")
    partitions = split_rows(DATA_FILE.read_text(encoding="utf-8"), **options)
    assert run.results["partitions"].output == partitions
    process = run.results["process"].items
    assert process is not None and len(process) == len(partitions) > 1
    rows = list(csv.DictReader(io.StringIO(DATA_FILE.read_text(encoding="utf-8"))))
    # The partitions cover every row once, in order.
    assert [row for part in partitions for row in part["rows"]] == rows
    assert [(p["first_row"], p["last_row"]) for p in partitions] == [
        (i + 1, min(i + options["rows"], len(rows))) for i in range(0, len(rows), options["rows"])
    ]


def test_data_processing_shows_each_planted_anomaly_to_the_partition_that_holds_it(runs):
    run = runs["data_processing"]
    generator = runpy.run_path(str(DATA_GENERATOR))
    rows = list(csv.DictReader(io.StringIO(DATA_FILE.read_text(encoding="utf-8"))))
    partitions = run.results["partitions"].output
    seen = []
    for index in range(len(partitions)):
        prompt = run.log.prompt_starting(f"Partition {index} of the order data.")
        shown = item_in(prompt, "The partition (its rows and their row numbers):")
        assert shown == partitions[index]
        first, last = shown["first_row"], shown["last_row"]
        for row_number in generator["ANOMALIES"]:
            if first <= row_number <= last:
                assert shown["rows"][row_number - first] == rows[row_number - 1]
                seen.append(row_number)
    assert sorted(seen) == sorted(generator["ANOMALIES"])


def test_data_processing_sample_csv_is_what_its_generator_writes():
    generator = runpy.run_path(str(DATA_GENERATOR))
    expected = generator["orders"](random.Random(generator["SEED"]))
    rows = list(csv.DictReader(io.StringIO(DATA_FILE.read_text(encoding="utf-8"))))
    assert rows == expected
    assert len(rows) == generator["ROWS"] >= 200


# -- content generation --------------------------------------------------------------------


def test_content_generation_writes_one_section_per_outline_entry(runs):
    run = runs["content_generation"]
    outline = run.results["outline"].output
    assert isinstance(outline, list) and 4 <= len(outline) <= 6
    assert all(set(section) == {"heading", "points"} for section in outline)
    write = run.results["write"].items
    assert write is not None and len(write) == len(outline)


def test_content_generation_gives_every_writer_its_own_section(runs):
    run = runs["content_generation"]
    outline = run.results["outline"].output
    assert run.log.prompts()[0].startswith("Outline an article"), "the outline runs first"
    for index, section in enumerate(outline):
        prompt = run.log.prompt_starting(f"Section {index} of the article")
        assert f'"{section["heading"]}"' in prompt
        assert json.loads(prompt.split("cover:\n", 1)[1]) == section["points"]
    edit = run.log.prompt_starting("Join the sections below")
    _, _, sections = edit.partition("\n\nSections:\n")
    assert sections.startswith("#### write[0]\n")
