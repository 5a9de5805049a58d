"""The run API: run a plan with a checkpoint, read a run's state by its id, resume it.

The command line's `run` and `resume` are calls to these; `start_goal_run` plans a goal
and runs the plan as one resumable run.
"""

from fanfold.runs.api import (
    PlanRun,
    RunNotFoundError,
    RunState,
    aget_run,
    aopen_run,
    aresume_run,
    arun_plan,
    get_run,
    is_complete,
    new_run_id,
    open_run,
    resume_run,
    run_plan,
    start_run,
    task_text,
)
from fanfold.runs.goal_runs import GoalRun, start_goal_run
from fanfold.runs.stream import EventHandler, execute, stream_run
from fanfold.runs.watch import Watch

__all__ = [
    "EventHandler",
    "GoalRun",
    "PlanRun",
    "RunNotFoundError",
    "RunState",
    "Watch",
    "aget_run",
    "aopen_run",
    "aresume_run",
    "arun_plan",
    "execute",
    "get_run",
    "is_complete",
    "new_run_id",
    "open_run",
    "resume_run",
    "run_plan",
    "start_goal_run",
    "start_run",
    "stream_run",
    "task_text",
]
