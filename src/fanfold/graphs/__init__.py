"""The LangGraph adapter: compiling plans into StateGraphs, and the compiled graph."""

from fanfold.graphs.compile import DEFAULT_AGGREGATOR, compile_plan
from fanfold.graphs.compiled import CompiledPlanGraph

__all__ = ["DEFAULT_AGGREGATOR", "CompiledPlanGraph", "compile_plan"]
