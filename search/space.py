"""The search space: one candidate multiplier (spec and mode) per GEMM of a model.

A *choice* is a tuple of candidate indices, one per GEMM, GEMMs in forward order; it is
what the search methods work on. `SearchSpace.assignment` turns a choice into the
assignment JSON every axsa command takes (``{gemm: spec}`` or
``{gemm: {"spec": s, "mode": m}}``, DESIGN.md), so a point on a front can be handed to
`axsa eval --assign`, `finetune --assign` and `sim model --assign` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from axsa.errors import InputError

__all__ = ["Candidate", "Choice", "SearchSpace"]

Choice = tuple[int, ...]


@dataclass(frozen=True)
class Candidate:
    """One multiplier a GEMM may get: a canonical spec and, for mode-configurable
    multipliers, the mode."""

    spec: str
    mode: int = 0

    def __post_init__(self):
        if not isinstance(self.spec, str) or not self.spec:
            raise InputError(f"candidate spec must be a non-empty string, not {self.spec!r}")
        if isinstance(self.mode, bool) or not isinstance(self.mode, int) or self.mode < 0:
            raise InputError(f"candidate mode must be a non-negative integer, not "
                             f"{self.mode!r} (spec {self.spec})")

    @property
    def label(self) -> str:
        """``spec`` or ``spec#mode`` (modes other than 0 shown)."""
        return self.spec if self.mode == 0 else f"{self.spec}#{self.mode}"

    def to_json(self):
        return self.spec if self.mode == 0 else {"spec": self.spec, "mode": self.mode}


@dataclass(frozen=True)
class SearchSpace:
    """GEMM names (forward order) and each GEMM's candidates.

    `exact[g]` is the index of GEMM g's exact candidate: the all-exact choice is the
    reference every energy and accuracy ratio is taken against.
    """

    gemms: tuple[str, ...]
    candidates: tuple[tuple[Candidate, ...], ...]
    exact: tuple[int, ...]

    def __post_init__(self):
        if not self.gemms:
            raise InputError("a search space needs at least one GEMM")
        if len(self.candidates) != len(self.gemms) or len(self.exact) != len(self.gemms):
            raise InputError("a search space needs one candidate list and one exact index "
                             "per GEMM")
        for name, cands, e in zip(self.gemms, self.candidates, self.exact):
            if not cands:
                raise InputError(f"GEMM {name!r} has no candidate multiplier")
            if not 0 <= e < len(cands):
                raise InputError(f"exact index {e} of GEMM {name!r} is out of range")

    @classmethod
    def uniform(cls, gemms: Sequence[str], candidates: Sequence[Candidate],
                exact: int = 0) -> SearchSpace:
        """The same candidates for every GEMM."""
        cands = tuple(candidates)
        return cls(tuple(gemms), tuple(cands for _ in gemms), tuple(exact for _ in gemms))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.candidates)

    @property
    def all_exact(self) -> Choice:
        return self.exact

    def size(self) -> int:
        """Number of distinct assignments."""
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def check(self, choice: Sequence[int]) -> Choice:
        choice = tuple(int(c) for c in choice)
        if len(choice) != len(self.gemms) or any(
                not 0 <= c < s for c, s in zip(choice, self.sizes)):
            raise InputError(f"choice {choice} does not fit the search space "
                             f"(sizes {self.sizes})")
        return choice

    def assignment(self, choice: Sequence[int]) -> dict:
        """The assignment JSON of `choice`: every GEMM named, exact ones included."""
        choice = self.check(choice)
        return {g: self.candidates[i][c].to_json()
                for i, (g, c) in enumerate(zip(self.gemms, choice))}

    def approximate_assignment(self, choice: Sequence[int]) -> dict:
        """The assignment JSON of `choice` without its exact GEMMs (which multiply
        exactly when unnamed)."""
        choice = self.check(choice)
        return {g: self.candidates[i][c].to_json()
                for i, (g, c) in enumerate(zip(self.gemms, choice)) if c != self.exact[i]}

    def approximate(self, choice: Sequence[int]) -> dict[str, str]:
        """{gemm: candidate label} of the GEMMs `choice` does not give the exact multiplier."""
        choice = self.check(choice)
        return {g: self.candidates[i][c].label
                for i, (g, c) in enumerate(zip(self.gemms, choice)) if c != self.exact[i]}

    def choice_of(self, assignment: dict) -> Choice:
        """The choice of an assignment JSON (GEMMs it leaves out are exact)."""
        out = list(self.exact)
        for name, value in assignment.items():
            if name not in self.gemms:
                raise InputError(f"GEMM {name!r} is not in the search space")
            g = self.gemms.index(name)
            cand = Candidate(value, 0) if isinstance(value, str) else \
                Candidate(value["spec"], int(value.get("mode", 0)))
            if cand not in self.candidates[g]:
                raise InputError(f"{cand.label!r} is not a candidate of GEMM {name!r}")
            out[g] = self.candidates[g].index(cand)
        return tuple(out)
