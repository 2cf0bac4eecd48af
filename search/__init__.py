"""Design-space exploration: per-GEMM multiplier assignments by MCTS and baselines.

`run_search(method, evaluator, budget, accuracy_budget, seed)` is the entry point;
`SearchSpace` describes the choices, an `Evaluator` scores them, and the `Archive` keeps
every evaluation, its Pareto front and hypervolume. docs/search.md explains the tree,
the rollout policy, the reward and the baselines.
"""

from .evaluate import Budget, Evaluator, Hints
from .pareto import Archive, Evaluation, hypervolume, pareto_front, reward
from .run import METHODS, SearchResult, run_search
from .space import Candidate, Choice, SearchSpace

__all__ = [
    "METHODS", "Archive", "Budget", "Candidate", "Choice", "Evaluation", "Evaluator",
    "Hints", "SearchResult", "SearchSpace", "hypervolume", "pareto_front", "reward",
    "run_search",
]
