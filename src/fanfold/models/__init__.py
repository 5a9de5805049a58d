"""Chat model resolution and the offline simulated model."""

from fanfold.models.resolve import DEFAULT_MODEL, model_label, resolve_model

__all__ = ["DEFAULT_MODEL", "model_label", "resolve_model"]
