"""Compiling plans into LangGraph StateGraphs and running them greedily."""

from fanfold.graphs.compile import DEFAULT_AGGREGATOR, compile_plan
from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.graphs.dispatcher import EVENT_TYPE, Dispatcher

__all__ = ["DEFAULT_AGGREGATOR", "EVENT_TYPE", "CompiledPlanGraph", "Dispatcher", "compile_plan"]
