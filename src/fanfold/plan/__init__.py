"""Plans: the subtask models, their file loader, templates and graph checks."""

from fanfold.plan.model_spec import ModelSpec
from fanfold.plan.models import AggregationSettings, InputSpec, SubTask, TaskPlan

__all__ = ["AggregationSettings", "InputSpec", "ModelSpec", "SubTask", "TaskPlan"]
