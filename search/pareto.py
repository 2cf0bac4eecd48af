"""Evaluations, the archive of everything a search evaluated, Pareto fronts and
hypervolume.

Both objectives are minimised: `delta`, the relative accuracy loss against the all-exact
integer model (0.02 = 2% worse RMSE or 2% lower top-1; negative when better), and
`energy_ratio`, multiplier energy per inference against all-exact.

Hypervolume is pymoo's indicator in the (delta, energy_ratio) plane with the reference
point (accuracy budget, 1.0): only points that are within the budget *and* save energy
add to it, so it measures exactly the region a user asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .space import Choice

__all__ = ["Archive", "Evaluation", "hypervolume", "pareto_front", "reward"]


@dataclass(frozen=True)
class Evaluation:
    """What one assignment scored.

    Attributes
    ----------
    delta : float
        Relative accuracy loss vs the all-exact integer model (validation split).
    energy_ratio : float
        Multiplier energy per inference vs all-exact.
    extra : dict
        Further figures (metric value, PE energy ratio, area ratio, ...), JSON-able.
    """

    delta: float
    energy_ratio: float
    extra: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {"delta": self.delta, "energy_ratio": self.energy_ratio, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        rest = {k: v for k, v in data.items() if k not in ("delta", "energy_ratio")}
        return cls(float(data["delta"]), float(data["energy_ratio"]), rest)


def reward(ev: Evaluation, accuracy_budget: float) -> float:
    """The scalar MCTS maximises (docs/search.md).

    Within the budget: the energy saving ``1 - energy_ratio`` (0..1 for savings).
    Over it: ``-min(1, (delta - budget) / budget)``, at most 0, so every point within the
    budget outranks every point over it, and nearly-feasible points outrank far ones.
    """
    if ev.delta <= accuracy_budget:
        return 1.0 - ev.energy_ratio
    over = (ev.delta - accuracy_budget) / max(accuracy_budget, 1e-12)
    return -min(1.0, over)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates minimised), sorted by the
    first coordinate; of equal points the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front, best = [], np.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def hypervolume(points: Iterable[tuple[float, float]],
                reference: tuple[float, float]) -> float:
    """Area dominated by `points` and bounded by `reference` (pymoo's HV indicator)."""
    from pymoo.indicators.hv import HV

    pts = np.array([p for p in points if p[0] < reference[0] and p[1] < reference[1]],
                   dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=np.array(reference, dtype=np.float64))(pts))


class Archive:
    """Every assignment evaluated, in evaluation order, each once."""

    def __init__(self):
        self._items: dict[Choice, Evaluation] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, choice: Choice) -> bool:
        return choice in self._items

    def __getitem__(self, choice: Choice) -> Evaluation:
        return self._items[choice]

    def add(self, choice: Choice, ev: Evaluation) -> None:
        self._items.setdefault(choice, ev)

    def items(self) -> list[tuple[Choice, Evaluation]]:
        return list(self._items.items())

    def front(self) -> list[tuple[Choice, Evaluation]]:
        items = self.items()
        idx = pareto_front([(e.delta, e.energy_ratio) for _, e in items])
        return [items[i] for i in idx]

    def hypervolume(self, accuracy_budget: float, first: int | None = None) -> float:
        """Hypervolume of the first `first` evaluations (all by default)."""
        items = self.items()[:first]
        return hypervolume(((e.delta, e.energy_ratio) for _, e in items),
                           (accuracy_budget, 1.0))

    def best(self, accuracy_budget: float) -> tuple[Choice, Evaluation] | None:
        """Lowest energy ratio within the accuracy budget, if any point is within it."""
        ok = [(c, e) for c, e in self.items() if e.delta <= accuracy_budget]
        return min(ok, key=lambda ce: (ce[1].energy_ratio, ce[1].delta)) if ok else None
