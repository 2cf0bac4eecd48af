"""A small synthetic search problem with a known optimum (brute force over every
assignment), for the search methods' tests and benchmark."""

from __future__ import annotations

import itertools

import numpy as np
from axsa.search import Candidate, Evaluation, Hints, SearchSpace


class Synthetic:
    """G GEMMs with C candidates each (candidate 0 exact). Energy is additive; accuracy
    loss is additive plus a pairwise interaction between neighbouring GEMMs, and the free
    error proxy is the true per-GEMM loss times noise (informative, not exact)."""

    def __init__(self, gemms: int = 6, cands: int = 4, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.space = SearchSpace.uniform(
            [f"g{i}" for i in range(gemms)],
            [Candidate("exact@s8")] + [Candidate(f"c{j}@s8") for j in range(1, cands)])
        share = rng.dirichlet(np.ones(gemms))                # each GEMM's share of energy
        frac = np.sort(rng.uniform(0.05, 0.8, (gemms, cands - 1)), axis=1)
        self.saving = np.concatenate([np.zeros((gemms, 1)), share[:, None] * frac], axis=1)
        sens = rng.uniform(0.0, 0.03, gemms)[:, None] * (frac / 0.8) ** 2
        self.loss = np.concatenate([np.zeros((gemms, 1)), sens], axis=1)
        self.noise = np.concatenate(
            [np.ones((gemms, 1)), rng.uniform(0.5, 1.5, (gemms, cands - 1))], axis=1)
        self.calls = 0

    def delta(self, choice) -> float:
        d = sum(self.loss[g, c] for g, c in enumerate(choice))
        d += sum(2.0 * self.loss[g, a] * self.loss[g + 1, b] / 0.01
                 for g, (a, b) in enumerate(zip(choice, choice[1:])))
        return float(d)

    def energy_ratio(self, choice) -> float:
        return float(1.0 - sum(self.saving[g, c] for g, c in enumerate(choice)))

    def evaluate(self, choices):
        self.calls += len(choices)
        return [Evaluation(self.delta(c), self.energy_ratio(c)) for c in choices]

    def hints(self) -> Hints:
        err = self.loss * self.noise
        return Hints(tuple(map(tuple, self.saving.tolist())), tuple(map(tuple, err.tolist())))

    def optimum(self, accuracy_budget: float) -> float:
        """Lowest energy ratio within the budget, by brute force."""
        best = 1.0
        for choice in itertools.product(*(range(s) for s in self.space.sizes)):
            if self.delta(choice) <= accuracy_budget:
                best = min(best, self.energy_ratio(choice))
        return best
