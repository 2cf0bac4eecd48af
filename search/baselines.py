"""The baselines MCTS is measured against, on the same evaluator and budget.

- `random_search`: assignments drawn uniformly, each GEMM's candidate independently.
- `greedy`: per-GEMM sensitivity (`sensitivity.estimated_deltas`), then single-GEMM
  moves in order of energy saved per unit of estimated loss, each evaluated and kept
  when the assignment stays within the accuracy budget.
- `nsga2`: pymoo's NSGA-II on integer variables (one per GEMM), objectives
  (delta, energy_ratio), population 16 whatever the budget (so a run's first N
  evaluations are the same at every budget), run ask-and-tell so it stops at the same
  budget.
"""

from __future__ import annotations

import numpy as np

from .evaluate import Budget
from .sensitivity import estimated_deltas
from .space import SearchSpace

__all__ = ["greedy", "nsga2", "random_search"]


def random_search(space: SearchSpace, budget: Budget, accuracy_budget: float,
                  seed: int, batch: int = 4) -> None:
    rng = np.random.default_rng(seed)
    sizes = np.array(space.sizes)
    stalls = 0
    while budget.remaining > 0 and stalls < 50:
        choices = [tuple(int(x) for x in rng.integers(0, sizes)) for _ in range(batch)]
        before = budget.spent
        budget.evaluate(choices)
        stalls = stalls + 1 if budget.spent == before else 0


def greedy(space: SearchSpace, budget: Budget, accuracy_budget: float, seed: int,
           batch: int = 1) -> None:
    hints = budget.evaluator.hints()
    est = estimated_deltas(space, hints, budget)
    moves = [(g, c) for g in range(len(space.gemms)) for c in range(space.sizes[g])
             if hints.saving[g][c] > 0]
    moves.sort(key=lambda gc: (-hints.saving[gc[0]][gc[1]]
                               / (est[gc[0]][gc[1]] + 0.1 * accuracy_budget), gc))
    current = list(space.all_exact)
    for g, c in moves:
        if budget.remaining <= 0:
            break
        if hints.saving[g][c] <= hints.saving[g][current[g]]:
            continue
        trial = list(current)
        trial[g] = c
        ev = budget.evaluate_one(tuple(trial))
        if ev is not None and ev.delta <= accuracy_budget:
            current = trial


def nsga2(space: SearchSpace, budget: Budget, accuracy_budget: float, seed: int,
          pop_size: int = 16) -> None:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    n = len(space.gemms)
    problem = Problem(n_var=n, n_obj=2, xl=np.zeros(n), xu=np.array(space.sizes) - 1,
                      vtype=int)
    algorithm = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=True)
    algorithm.setup(problem, termination=("n_gen", 10**6), seed=seed, verbose=False)
    stalls = 0
    while budget.remaining > 0 and stalls < 50:
        pop = algorithm.ask()
        choices = [tuple(int(round(v)) for v in x) for x in pop.get("X")]
        before = budget.spent
        evs = budget.evaluate(choices)
        stalls = stalls + 1 if budget.spent == before else 0
        # Beyond the budget, unevaluated individuals get the worst objectives.
        F = np.array([[ev.delta, ev.energy_ratio] if ev is not None else [np.inf, np.inf]
                      for ev in evs], dtype=np.float64)
        pop.set("F", F)
        algorithm.tell(infills=pop)
