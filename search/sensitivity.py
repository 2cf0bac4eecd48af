"""Per-GEMM sensitivity: how much accuracy a candidate costs at one GEMM, estimated.

One accuracy evaluation per GEMM calibrates the free error proxy: GEMM g alone gets its
candidate of largest output error (`Hints.error`), everything else exact, and the
measured accuracy loss scales the proxy of g's other candidates::

    est_delta[g][c] = max(0, delta_g) * error[g][c] / error[g][c_max(g)]

These evaluations go through the search's `Budget` like any other (so a method that uses
sensitivities pays for them) and, through the store, are shared by every later search of
the same model.
"""

from __future__ import annotations

from .evaluate import Budget, Hints
from .space import SearchSpace

__all__ = ["estimated_deltas"]


def estimated_deltas(space: SearchSpace, hints: Hints, budget: Budget
                     ) -> list[list[float]]:
    """est_delta[g][c] for every GEMM and candidate (0 for exact candidates).

    Spends at most one evaluation per GEMM (none for a GEMM whose candidates all have
    zero error proxy, or once the budget is spent: those GEMMs get the proxy itself)."""
    probes, worst = [], []
    for g, errs in enumerate(hints.error):
        c_max = max(range(len(errs)), key=lambda c: (errs[c], -c))
        worst.append(c_max)
        if errs[c_max] > 0:
            choice = list(space.all_exact)
            choice[g] = c_max
            probes.append((g, tuple(choice)))
    evs = budget.evaluate([c for _, c in probes])
    scale = {g: max(0.0, ev.delta) / hints.error[g][worst[g]]
             for (g, _), ev in zip(probes, evs) if ev is not None}
    return [[e * scale.get(g, 1.0) for e in errs] for g, errs in enumerate(hints.error)]
