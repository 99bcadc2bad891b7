"""Reasoning as graph execution: programs of model calls, tools, branches and loops (written by
a person or planned by the model), run step by step against any model backend, traced,
budgeted and resumable.

Public surface: `solve` (answer one question with a strategy), `evaluate_strategies` /
`strategies_table` / `strategies_plot` (compare strategies on a generated suite, across lengths
and seeds), `load_program`, `Executor`,
`Budget`, `make_backend`, and the retrieval index (`build_index`, `search`).
"""

from loom.reason.backends import make_backend
from loom.reason.executor import Budget, Executor
from loom.reason.plan_code import load_program
from loom.reason.retrieval import build_index, search
from loom.reason.solve import evaluate_strategies, solve, strategies_plot, strategies_table

__all__ = ["Budget", "Executor", "build_index", "evaluate_strategies", "load_program", "make_backend", "search",
           "solve", "strategies_plot", "strategies_table"]
