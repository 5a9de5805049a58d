"""Node functions: the subtask node, the aggregate node and the registry of node kinds."""

from fanfold.nodes import builtin_kinds as _builtin_kinds  # noqa: F401  (registers "llm", "template")
from fanfold.nodes import splitters as _splitters  # noqa: F401  (registers the split_* kinds)
from fanfold.nodes.registry import (
    KindOutput,
    NodeKind,
    NodeKindRegistry,
    SubtaskCall,
    node_kinds,
    register_node_kind,
)

__all__ = [
    "KindOutput",
    "NodeKind",
    "NodeKindRegistry",
    "SubtaskCall",
    "node_kinds",
    "register_node_kind",
]
