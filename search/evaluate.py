"""What a search method sees of the problem: an evaluator, its free hints, and the budget.

An `Evaluator` scores a batch of choices (accuracy by emulation, energy from the cost
model) and gives `Hints` that cost no accuracy evaluation: each (GEMM, candidate)'s
share of the all-exact energy it saves (energy per inference is a sum over GEMMs, so
savings add up) and a relative error proxy of that GEMM's output under that candidate
(measured on the GEMM's recorded operands).

`Budget` wraps an evaluator for one search run: it counts distinct evaluations, answers
repeats from the archive for free, and stops at the budget, so every method is compared
on exactly the same number of evaluated assignments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .pareto import Archive, Evaluation
from .space import Choice, SearchSpace

__all__ = ["Budget", "Evaluator", "Hints"]


@dataclass(frozen=True)
class Hints:
    """Free, per-(GEMM, candidate) hints. `saving[g][c]`: fraction of the all-exact
    multiplier energy per inference saved by giving GEMM g candidate c (0 for exact);
    `error[g][c]`: relative error of GEMM g's output under c (0 for exact)."""

    saving: tuple[tuple[float, ...], ...]
    error: tuple[tuple[float, ...], ...]

    def energy_ratio(self, choice: Sequence[int]) -> float:
        """The energy ratio the savings predict (exact when energy is additive)."""
        return 1.0 - sum(self.saving[g][c] for g, c in enumerate(choice))


class Evaluator(Protocol):
    space: SearchSpace

    def evaluate(self, choices: Sequence[Choice]) -> list[Evaluation]:
        """Score each choice (a batch, so an evaluator may run them in parallel)."""

    def hints(self) -> Hints:
        """Free hints (no accuracy evaluation)."""


class Budget:
    """At most `budget` distinct evaluations through `evaluator`, recorded in `archive`.

    `progress(done, budget)` is called after every batch.
    """

    def __init__(self, evaluator: Evaluator, budget: int, archive: Archive | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.evaluator = evaluator
        self.budget = budget
        self.archive = archive if archive is not None else Archive()
        self.progress = progress
        self.spent = 0

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    def evaluate(self, choices: Sequence[Choice]) -> list[Evaluation | None]:
        """Evaluations of `choices`, in order. Repeats cost nothing; new choices beyond
        the budget get None (and are not evaluated)."""
        new: list[Choice] = []
        for c in choices:
            if c not in self.archive and c not in new and len(new) < self.remaining:
                new.append(c)
        if new:
            for c, ev in zip(new, self.evaluator.evaluate(new)):
                self.archive.add(c, ev)
            self.spent += len(new)
            if self.progress is not None:
                self.progress(self.spent, self.budget)
        return [self.archive[c] if c in self.archive else None for c in choices]

    def evaluate_one(self, choice: Choice) -> Evaluation | None:
        return self.evaluate([choice])[0]
