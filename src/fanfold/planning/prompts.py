"""The planner's messages: instructions, the request for one goal, and the retry feedback.

`SimulatedChatModel` reads two things from the request, so keep them stable: the goal
between `<goal>` and `</goal>` lines, and the phrase "at most N subtasks".
"""

from __future__ import annotations

from collections.abc import Mapping

from fanfold.plan.graph_checks import RESERVED_IDS

#: Name of the structured-output schema, and so of the tool the model is asked to call.
SCHEMA_NAME = "FanfoldPlan"
GOAL_OPEN = "<goal>"
GOAL_CLOSE = "</goal>"

_RESERVED = ", ".join(sorted(i for i in RESERVED_IDS if not i.startswith("__")))

SYSTEM_PROMPT = f"""\
You plan work for fanfold. fanfold runs a job as subtasks: each subtask is one prompt \
sent to a language model, and it starts as soon as the subtasks it depends on have \
finished. Subtasks without dependencies all run at the same time.

How to split a goal:
- Prefer independent subtasks: they run in parallel, so the job finishes sooner. A \
dependency makes a subtask wait until the other one has finished, so add one only when \
a subtask really needs another subtask's output.
- A good default: a few independent subtasks that each cover one part of the goal, then \
one final subtask that depends on them and combines their outputs.
- Fewer subtasks are fine when the goal is small. Do not split work that one prompt \
does well.

Rules:
- id: short and unique, made of letters, digits, '_' and '-', starting with a letter \
(e.g. market_scan). Reserved, do not use: {_RESERVED}.
- prompt: complete on its own, because the model that runs it sees only this prompt \
(with its placeholders filled in). To use another subtask's output, write its id in \
braces, e.g. {{market_scan}}, and list that id in depends_on. {{task}} inserts the \
overall task.
- depends_on: the ids whose outputs the prompt needs; leave it empty for independent \
subtasks. Dependencies must not form a cycle.
- map: only for work over a list that is known only at run time. Set map to the name \
of a run input that holds a list, or to the id of a subtask whose output is a list; the \
subtask then runs once per item, and {{item}} in its prompt is the item ({{index}} its \
position). Leave map out otherwise.
- Braces are only for these placeholders; write a literal brace as {{{{ or }}}}.
- task: one sentence that states the overall job.
"""

JSON_INSTRUCTIONS = """\
Answer with the plan as one JSON object and nothing else, in this shape:
{"task": "...", "subtasks": [{"id": "...", "prompt": "...", "depends_on": []}, \
{"id": "...", "prompt": "...", "depends_on": ["..."], "map": "..."}]}
Use exactly these field names; leave out "map" when a subtask does not run over a list. \
Do not call a tool: write the JSON in your reply."""


def request_prompt(
    goal: str, *, inputs: Mapping[str, str], max_subtasks: int, json_reply: bool
) -> str:
    """The first human message: the goal, the run inputs and the size limit.

    Args:
        goal: what the plan must achieve (stripped of outer whitespace).
        inputs: run inputs the plan may use, name -> description.
        max_subtasks: the most subtasks the plan may have.
        json_reply: ask for the plan as JSON text (the model cannot call tools).
    """
    parts = [f"Plan this goal:\n{GOAL_OPEN}\n{goal}\n{GOAL_CLOSE}"]
    if inputs:
        listed = "\n".join(
            f"- {{{name}}}: {description}" if description else f"- {{{name}}}"
            for name, description in inputs.items()
        )
        parts.append(
            "Run inputs, given when the plan runs. Prompts may insert them with {name}, and "
            f"map may name one that holds a list:\n{listed}"
        )
    else:
        parts.append(
            "There are no run inputs: placeholders may only name subtask ids, {task}, "
            "and {item}/{index} in a map subtask."
        )
    parts.append(f"Use at most {max_subtasks} subtasks.")
    if json_reply:
        parts.append(JSON_INSTRUCTIONS)
    return "\n\n".join(parts)


def retry_prompt(error: str, *, json_reply: bool) -> str:
    """The follow-up human message after a rejected reply, quoting why it was rejected."""
    text = (
        f"That plan was rejected: {error}\n\n"
        "Fix this problem, check the rest of the plan against the rules, and send the "
        "whole corrected plan."
    )
    if json_reply:
        text += "\n\n" + JSON_INSTRUCTIONS
    return text


def rejection_note(error: str) -> str:
    """Content of the tool message that answers a rejected plan tool call."""
    return f"Rejected: {error}"


JUDGE_SYSTEM = """\
You judge a finished fanfold run. A goal was split into subtasks, each subtask's prompt \
was sent to a language model, and the results were combined. Decide whether the results \
achieve the goal ("done") or whether a new plan should run ("replan"), for example \
because a part of the goal is missing or a result failed. Replan only when another plan \
would clearly do better."""

JUDGE_REPLY = """\
Answer with one JSON object and nothing else: \
{"decision": "done" or "replan", "reason": "one sentence"}"""

JUDGE_CLIP = 600
"""Characters of each result (and of the combined output) the judge is shown."""


def _clipped(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= JUDGE_CLIP else text[: JUDGE_CLIP - 3] + "..."


def judge_prompt(
    goal: str,
    *,
    round_number: int,
    prompts_by_id: Mapping[str, str],
    results: Mapping[str, tuple[str, str]],
    output: str,
) -> str:
    """The judge's request: the goal, the plan (each subtask's prompt) and the results.

    Args:
        round_number: which round of the run this is (1 for the first plan).
        prompts_by_id: subtask id -> its prompt, in plan order.
        results: subtask id -> (status, its output or error).
        output: the combined output ("" when there is none).
    """
    plan = "\n".join(f"- {sid}: {_clipped(prompt)}" for sid, prompt in prompts_by_id.items())
    listed = "\n".join(
        f"- {sid} ({status}): {_clipped(text)}" for sid, (status, text) in results.items()
    )
    parts = [
        f"Judge round {round_number} of this run.",
        f"Goal:\n{GOAL_OPEN}\n{goal}\n{GOAL_CLOSE}",
        f"Plan:\n{plan}",
        f"Results:\n{listed or '(none)'}",
        f"Combined output:\n{_clipped(output) or '(none)'}",
        JUDGE_REPLY,
    ]
    return "\n\n".join(parts)


def replan_note(round_number: int, reason: str, earlier: Mapping[str, str]) -> str:
    """What a replanning planner is told besides the goal: why, and what it may reuse.

    Args:
        round_number: the round about to be planned (2 for the first replan).
        reason: the judge's reason for asking for another plan.
        earlier: run inputs holding earlier results, name -> what each holds.
    """
    listed = "\n".join(f"- {{{name}}}: {text}" for name, text in earlier.items())
    return (
        f"The judge asked for another plan (round {round_number}): {reason}\n"
        "An earlier plan ran already. A subtask you repeat unchanged (same id, same "
        "fields) keeps its earlier result. Earlier results are run inputs you may use:\n"
        f"{listed or '(none)'}"
    )
