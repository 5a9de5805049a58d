"""Plans: the subtask models, their file loader, templates and graph checks."""

from fanfold.plan.models import AggregationSettings, InputSpec, SubTask, TaskPlan

__all__ = ["AggregationSettings", "InputSpec", "SubTask", "TaskPlan"]
