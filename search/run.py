"""One search run: a method, an evaluator, a budget, a seed; the result and its front."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from axsa.errors import InputError

from .baselines import greedy, nsga2, random_search
from .evaluate import Budget, Evaluator
from .mcts import mcts
from .pareto import Archive

__all__ = ["METHODS", "SearchResult", "run_search"]

#: method name -> function(space, budget, accuracy_budget, seed)
METHODS: dict[str, Callable] = {
    "mcts": mcts, "random": random_search, "greedy": greedy, "nsga2": nsga2}


@dataclass
class SearchResult:
    method: str
    budget: int
    seed: int
    accuracy_budget: float
    archive: Archive

    @property
    def reference_point(self) -> tuple[float, float]:
        return (self.accuracy_budget, 1.0)

    def hypervolume(self, first: int | None = None) -> float:
        return self.archive.hypervolume(self.accuracy_budget, first)

    def to_json(self, space) -> dict:
        return {
            "method": self.method, "budget": self.budget, "evaluations": len(self.archive),
            "seed": self.seed, "accuracy_budget": self.accuracy_budget,
            "hypervolume": self.hypervolume(), "reference_point": list(self.reference_point),
            "pareto": [{"assignment": space.assignment(c),
                        "approximate": space.approximate(c), **ev.to_json()}
                       for c, ev in self.archive.front()],
        }


def check_budgets(budget, accuracy_budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, not {budget!r}")
    if not isinstance(accuracy_budget, (int, float)) or not math.isfinite(accuracy_budget) \
            or not 0 < accuracy_budget < 1:
        raise InputError(f"accuracy budget must be a fraction in (0, 1), e.g. 0.02 for 2%, "
                         f"not {accuracy_budget!r}")


def run_search(method: str, evaluator: Evaluator, budget: int, accuracy_budget: float,
               seed: int = 0, progress: Callable[[int, int], None] | None = None
               ) -> SearchResult:
    """Run `method` on `evaluator` for `budget` distinct evaluations."""
    if method not in METHODS:
        raise InputError(f"unknown search method {method!r} (methods: {', '.join(METHODS)})")
    check_budgets(budget, accuracy_budget)
    b = Budget(evaluator, budget, progress=progress)
    METHODS[method](evaluator.space, b, accuracy_budget, seed)
    return SearchResult(method, budget, seed, float(accuracy_budget), b.archive)
