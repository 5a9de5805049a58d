"""The `fanfold` command line, driven through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanfold import TaskPlan, __version__, compile_plan
from fanfold.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, app
from fanfold.testing import SimServer, SimServerConfig


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def topic_plan(tmp_path: Path) -> Path:
    """A plan whose prompts start with run inputs, so the simulated reply echoes them."""
    path = tmp_path / "topic.yaml"
    path.write_text(
        "task: Brief on {topic}\n"
        "subtasks:\n"
        "  - id: facts\n"
        '    prompt: "{topic} facts"\n'
        "  - id: review\n"
        '    prompt: "{notes} notes"\n'
        "    depends_on: [facts]\n",
        encoding="utf-8",
    )
    return path


def assert_one_line_error(result, *needles: str) -> str:
    """Exit status 1, no traceback, and exactly one `Error: ...` line on stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""
    return lines[0]


# -- run -----------------------------------------------------------------------------------


def test_run_prints_every_subtask_with_its_status(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "--model", "simulated"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Task: Write a one-page market brief on home solar batteries for a product team."
    )
    plan = TaskPlan.from_file(research_plan_path)
    for sid in plan.ids:
        matching = [line for line in lines if line.split() and line.split()[-1] == sid]
        assert len(matching) == 1, sid
        assert matching[0].split()[0] == "succeeded"
    assert f"{len(plan.ids)} succeeded, 0 failed, 0 skipped" in result.stdout
    assert "[simulated reply] Task: Write a one-page market brief" in result.stdout
    # Progress goes to stderr, one line per finished subtask.
    progress = [line.split() for line in result.stderr.splitlines() if line.strip()]
    assert sorted(p[-1] for p in progress) == sorted([*plan.ids, "aggregate"])


def test_run_json_output_parses_with_results_output_and_totals(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "simulated", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    plan = TaskPlan.from_file(research_plan_path)
    assert list(payload["results"]) == plan.ids
    for sid, entry in payload["results"].items():
        assert entry["id"] == sid
        assert entry["status"] == "succeeded"
        assert entry["output"].startswith("[simulated reply]")
    assert payload["output"].startswith("[simulated reply] Task:")
    assert payload["aggregate_error"] is None
    totals = payload["totals"]
    assert (totals["tasks"], totals["succeeded"], totals["failed"]) == (len(plan.ids), 6, 0)
    assert totals["usage"]["total_tokens"] == sum(
        e["usage"]["total_tokens"] for e in payload["results"].values()
    )
    assert totals["wall_time"] > 0


def test_run_takes_inputs_as_key_value_and_key_at_file(runner, topic_plan, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("lunar {tides}", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "run",
            str(topic_plan),
            "-m",
            "simulated",
            "--json",
            "--input",
            "topic=ocean waves",
            "-i",
            f"notes=@{notes}",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["results"]["facts"]["output"].startswith("[simulated reply] ocean waves facts")
    assert payload["results"]["review"]["output"].startswith(
        "[simulated reply] lunar {tides} notes"
    )


def test_run_input_value_may_contain_equals_signs(runner, topic_plan):
    result = runner.invoke(
        app,
        ["run", str(topic_plan), "-m", "simulated", "--json", "-i", "topic=a=b", "-i", "notes=n"],
    )
    assert result.exit_code == 0, result.output
    assert "a=b facts" in json.loads(result.stdout)["results"]["facts"]["output"]


def test_run_human_output_shows_the_rendered_task(runner, topic_plan):
    result = runner.invoke(
        app, ["run", str(topic_plan), "-m", "simulated", "-i", "topic=kelp", "-i", "notes=n"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Task: Brief on kelp"


# -- errors --------------------------------------------------------------------------------


def test_missing_plan_file_is_one_error_line(runner, tmp_path):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["run", str(missing), "-m", "simulated"])
    assert_one_line_error(result, str(missing), "does not exist")


def test_bad_plan_is_one_error_line(runner, tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text(
        "task: t\nsubtasks:\n"
        "  - {id: a, prompt: x, depends_on: [b]}\n"
        "  - {id: b, prompt: y, depends_on: [a]}\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", str(path), "-m", "simulated"])
    assert_one_line_error(result, "a -> b -> a")


def test_yaml_syntax_error_is_one_error_line(runner, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["run", str(path), "-m", "simulated"])
    assert_one_line_error(result, "not valid YAML")


def test_missing_api_key_is_one_error_line(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path)])
    assert_one_line_error(result, "OPENAI_API_KEY", "--model simulated")


@pytest.mark.parametrize("pair", ["novalue", "=value", " =x"])
def test_malformed_input_option_is_one_error_line(runner, research_plan_path, pair):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "simulated", "-i", pair])
    assert_one_line_error(result, "key=value")


def test_unreadable_input_file_is_one_error_line(runner, topic_plan, tmp_path):
    missing = tmp_path / "missing.txt"
    result = runner.invoke(
        app, ["run", str(topic_plan), "-m", "simulated", "-i", "topic=x", "-i", f"notes=@{missing}"]
    )
    assert_one_line_error(result, "--input notes", str(missing))


def test_missing_run_input_is_one_error_line(runner, topic_plan):
    result = runner.invoke(app, ["run", str(topic_plan), "-m", "simulated", "-i", "notes=n"])
    assert_one_line_error(result, "'topic'", "--input topic=")


def test_unknown_model_is_one_error_line(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "nosuchprovider:x"])
    assert_one_line_error(result, "nosuchprovider:x", "simulated")


def test_unknown_model_exits_1_without_a_traceback(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "nosuchprovider:x"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("Error: cannot resolve model 'nosuchprovider:x'")
    assert "Traceback" not in result.output


# -- exit statuses -------------------------------------------------------------------------

SIM_KEY = "sk-test-cli-statuses"


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=SIM_KEY)) as srv:
        yield srv


def run_against(server, plan: Path, *args: str, key: str = SIM_KEY):
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key, "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, ["run", str(plan), "-m", "openai:sim-model", *args])


def test_a_run_where_everything_succeeds_exits_0(runner, server, research_plan_path):
    result = run_against(server, research_plan_path)
    assert result.exit_code == EXIT_OK == 0, result.output


def test_a_run_where_every_request_is_refused_exits_3_and_still_reports(server, research_plan_path):
    result = run_against(server, research_plan_path, "--json", key="sk-the-wrong-key")
    assert result.exit_code == EXIT_INCOMPLETE == 3, result.output
    report = json.loads(result.stdout)
    assert {r["status"] for r in report["results"].values()} == {"failed", "skipped"}
    assert "401" in report["aggregate_error"]
    assert set(server.status_counts()) == {401}


def test_one_failed_subtask_makes_the_run_exit_3(server, research_plan_path):
    server.update(fail_prompts={"leading competitors": 400})
    result = run_against(server, research_plan_path)
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert "failed" in result.stdout and "skipped" in result.stdout


def test_a_failed_aggregation_alone_makes_the_run_exit_3(server, research_plan_path):
    server.update(fail_prompts={"Results to combine:": 400})
    result = run_against(server, research_plan_path, "--json")
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    report = json.loads(result.stdout)
    assert {r["status"] for r in report["results"].values()} == {"succeeded"}
    assert report["aggregate_error"]


@pytest.mark.parametrize(
    "args",
    [["rn"], ["run", "--no-such-option", "x"], ["run"], ["resume"], ["show", "--format"]],
)
def test_usage_errors_exit_1(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_ERROR == 1, result.output


@pytest.mark.parametrize("command", [[], ["run"], ["resume"]])
def test_help_documents_the_exit_statuses(runner, command):
    text = runner.invoke(app, [*command, "--help"]).stdout
    assert "Exit status:" in text
    for status in ("0", "1", "3"):
        assert any(line.strip().startswith(status + " ") for line in text.splitlines()), text


def test_version_prints_the_package_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"fanfold {__version__}"


def test_help_shows_flags_without_type_names(runner):
    text = runner.invoke(app, ["run", "--help"]).stdout
    assert "<bool>" not in text and "<str>" not in text and "<list" not in text
    assert "--json " in text and "--input KEY=VALUE" in text


# -- plan-file and input traps -------------------------------------------------------------


@pytest.fixture
def city_plan(tmp_path: Path) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(
        "task: Weather in {city}\n"
        "inputs:\n  city: Lisbon\n  days: {description: how many days}\n"
        "subtasks:\n  - id: forecast\n    prompt: '{city} for {days} days'\n",
        encoding="utf-8",
    )
    return path


def test_an_undeclared_input_is_an_error_that_lists_the_plans_inputs(runner, city_plan):
    result = runner.invoke(
        app, ["run", str(city_plan), "-m", "simulated", "-i", "days=2", "-i", "citty=Porto"]
    )
    line = assert_one_line_error(result, "'citty'", "did you mean 'city'?", "'days'")
    assert "inputs:" in line


def test_a_bare_input_value_is_the_default(runner, city_plan):
    result = runner.invoke(app, ["run", str(city_plan), "-m", "simulated", "-i", "days=2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Task: Weather in Lisbon"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "task: t\nsubtasks:\n  - {id: a, prompt: x, modle: simulated}\n",
            ["subtasks.0 (subtask 'a')", "unknown field 'modle'", "did you mean 'model'?"],
        ),
        (
            "tasks: t\nsubtasks:\n  - {id: a, prompt: x}\n",
            ["unknown field 'tasks'", "did you mean 'task'?"],
        ),
    ],
)
def test_an_unknown_plan_key_gets_a_did_you_mean_without_stutter(runner, tmp_path, text, needles):
    path = tmp_path / "typo.yaml"
    path.write_text(text, encoding="utf-8")
    line = assert_one_line_error(
        runner.invoke(app, ["run", str(path), "-m", "simulated"]), *needles
    )
    assert line.count("invalid") == 1, line


def test_a_model_name_after_simulated_is_one_error_line(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "simulated:fast"])
    assert_one_line_error(result, "'simulated:fast'", "'simulated'")


def test_resume_with_a_missing_checkpoint_file_creates_no_file(runner, tmp_path):
    missing = tmp_path / "nope.db"
    result = runner.invoke(app, ["resume", "0123456789ab", "--checkpoint", str(missing)])
    assert_one_line_error(result, str(missing), "does not exist")
    assert not missing.exists()


# -- show ----------------------------------------------------------------------------------


def test_show_prints_the_mermaid_graph(runner, research_plan_path):
    result = runner.invoke(app, ["show", str(research_plan_path)])
    assert result.exit_code == 0, result.output
    expected = compile_plan(research_plan_path, model="simulated").get_graph().draw_mermaid()
    assert result.stdout.rstrip("\n") == expected.rstrip("\n")
    assert "market_size --> opportunities;" in result.stdout


def test_show_prints_ascii_art(runner, research_plan_path):
    result = runner.invoke(app, ["show", str(research_plan_path), "--format", "ascii"])
    assert result.exit_code == 0, result.output
    for sid in TaskPlan.from_file(research_plan_path).ids:
        assert f"| {sid} |" in result.stdout
    assert "graph TD" not in result.stdout


def test_show_needs_no_api_key_and_makes_no_calls(runner, research_plan_path):
    result = runner.invoke(app, ["show", str(research_plan_path), "-f", "ascii"])
    assert result.exit_code == 0
    assert result.stderr == ""


def test_show_rejects_an_unknown_format(runner, research_plan_path):
    result = runner.invoke(app, ["show", str(research_plan_path), "--format", "gif"])
    assert_one_line_error(result, "'gif'", "mermaid", "ascii", "svg")


@pytest.mark.parametrize(
    ("fmt", "magic"), [("svg", b"<svg"), ("png", b"\x89PNG"), ("dot", b"digraph")]
)
def test_show_writes_an_offline_picture_to_a_file(runner, research_plan_path, tmp_path, fmt, magic):
    out = tmp_path / f"plan.{fmt}"
    result = runner.invoke(app, ["show", str(research_plan_path), "-f", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert magic in out.read_bytes()[:2000]


def test_show_needs_a_file_for_a_binary_format(runner, research_plan_path):
    result = runner.invoke(app, ["show", str(research_plan_path), "-f", "png"])
    assert_one_line_error(result, "-o FILE.png")


def test_run_writes_a_report_that_names_every_subtask(runner, research_plan_path, tmp_path):
    report = tmp_path / "report.html"
    args = ["run", str(research_plan_path), "-m", "simulated", "--report", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    for sid in TaskPlan.from_file(research_plan_path).ids:
        assert sid in html
    assert "<svg" in html and "http://www.w3.org/2000/svg" in html


# -- help ----------------------------------------------------------------------------------


def summary_line(help_text: str) -> str:
    """The first line after `Usage:` in a help screen, without box drawing."""
    lines = [line.strip(" │") for line in help_text.splitlines()]
    lines = [line for line in lines if line]
    assert lines[0].startswith("Usage:")
    return lines[1]


def assert_imperative(summary: str) -> None:
    first = summary.split()[0]
    assert first[0].isupper(), summary
    # "Run a plan", not "Runs a plan" or "Running a plan".
    assert not first.endswith(("s", "ing")) or first.endswith("ss"), summary
    assert summary.endswith("."), summary


@pytest.mark.parametrize("command", [[], ["run"], ["show"]])
def test_help_starts_with_an_imperative_line(runner, command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert_imperative(summary_line(result.stdout))


@pytest.mark.parametrize("command", ["run", "show"])
def test_command_help_shows_examples(runner, command):
    result = runner.invoke(app, [command, "--help"])
    assert "Examples:" in result.stdout
    assert f"fanfold {command} examples/research.yaml" in result.stdout
