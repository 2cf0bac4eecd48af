"""Monte Carlo Tree Search over per-GEMM multiplier assignments.

The tree: the root assigns nothing; a node at depth d has assigned GEMMs 0..d-1 (forward
order) and its children are GEMM d's candidates; a leaf at depth G is an assignment.

One iteration:

1. **selection** from the root by UCT, ``Q/n + c * sqrt(ln N / n)`` (Q: the sum of the
   rewards below a child, n: its visits, N: its parent's), until a node that still has
   an untried child;
2. **expansion** of that child, untried children taken in order of the rollout policy's
   value (below): most energy saved net of the priced accuracy loss first;
3. **rollout**: the remaining GEMMs assigned by the hardware-guided policy (below);
4. **evaluation** of the assignment (accuracy by emulation, energy by the cost model)
   and **backpropagation** of its `reward` up the path.

Rollout policy: GEMM by GEMM, candidate c of GEMM g is drawn with probability
proportional to ``exp((saving[g][c] / s_max - price * loss[g][c] / budget - penalty) / T)``:
`price` values the whole accuracy budget at half of all there is to save (so loss goes
where it saves most), and `penalty` is how far
the accumulated estimated loss (`sensitivity.estimated_deltas`, times a factor kappa
learnt as the run goes: the median of measured / estimated loss over the assignments
evaluated so far, since losses of several GEMMs rarely just add up) would overshoot the
accuracy budget, relative to the budget. Cheap candidates are preferred where a GEMM is
insensitive, and the policy stops spending accuracy it does not have.

Node values blend a child's mean and best reward (`greed`), both mapped onto 0..1 by the
running range of rewards, so UCT's exploration constant means the same on every model.

Iterations run in batches (`batch`, default 4) with a virtual loss on each selected path,
so a batch can be evaluated in parallel; the batch size, not the number of workers,
fixes the sequence of choices, so a seed gives the same run on any number of workers.
Repeats (a rollout that reaches an assignment already evaluated) cost no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .evaluate import Budget, Hints
from .pareto import reward
from .sensitivity import estimated_deltas
from .space import Choice, SearchSpace

__all__ = ["mcts"]


@dataclass
class _Node:
    untried: list[int]
    children: dict[int, _Node] = field(default_factory=dict)
    n: float = 0.0
    w: float = 0.0
    best: float = -math.inf


def mcts(space: SearchSpace, budget: Budget, accuracy_budget: float, seed: int,
         c_uct: float = 0.3, batch: int = 4, temperature: float = 0.15,
         greed: float = 0.5) -> None:
    """Run MCTS until `budget` is spent (or the tree stops yielding new assignments);
    every evaluation lands in `budget.archive`."""
    rng = np.random.default_rng(seed)
    hints = budget.evaluator.hints()
    est = estimated_deltas(space, hints, budget)
    policy = _Policy(space, hints, est, accuracy_budget, temperature)
    root = _Node(policy.order(0))
    scale = _Scale()
    stalls = 0
    while budget.remaining > 0 and stalls < 50:
        paths, choices = [], []
        for _ in range(batch):
            path, prefix = _select(root, policy, c_uct, greed, scale)
            choice = policy.rollout(prefix, rng)
            for retry in range(1, 6):        # fresh, ever more random, rollouts
                if choice not in budget.archive and choice not in choices:
                    break
                choice = policy.rollout(prefix, rng, heat=1.0 + retry)
            for node in path:                # virtual loss: spread the batch
                node.n += 1
                node.w -= 1
            paths.append(path)
            choices.append(choice)
        before = budget.spent
        evs = budget.evaluate(choices)
        stalls = stalls + 1 if budget.spent == before else 0
        for path, ev in zip(paths, evs):
            r = reward(ev, accuracy_budget) if ev is not None else 0.0
            for node in path:
                node.w += 1 + r              # undo the virtual loss, add the reward
                node.best = max(node.best, r)
        for choice, ev in zip(choices, evs):
            if ev is not None:
                scale.add(reward(ev, accuracy_budget))
                policy.observe(choice, ev.delta)


class _Scale:
    """Running min and max of the rewards seen, to map node values onto 0..1."""

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf

    def add(self, r: float) -> None:
        self.lo, self.hi = min(self.lo, r), max(self.hi, r)

    def __call__(self, r: float) -> float:
        if not self.hi > self.lo:
            return 0.5
        return (r - self.lo) / (self.hi - self.lo)


def _value(node: _Node, greed: float, scale: _Scale) -> float:
    """A child's value: a blend of its mean and its best reward, mapped onto 0..1."""
    n = max(node.n, 1e-9)
    return (1 - greed) * scale(node.w / n) + greed * scale(max(node.best, scale.lo))


def _select(root: _Node, policy: _Policy, c_uct: float, greed: float, scale: _Scale
            ) -> tuple[list[_Node], list[int]]:
    node, path, prefix = root, [root], []
    depth = policy.depth
    while len(prefix) < depth:
        if node.untried:
            c = node.untried.pop(0)
            child = _Node(policy.order(len(prefix) + 1))
            node.children[c] = child
            path.append(child)
            prefix.append(c)
            break
        log_n = math.log(max(node.n, 1.0))
        c, node = max(node.children.items(),
                      key=lambda kv: _value(kv[1], greed, scale)
                      + c_uct * math.sqrt(log_n / max(kv[1].n, 1e-9)))
        path.append(node)
        prefix.append(c)
    return path, prefix


class _Policy:
    """Expansion order and rollouts from the hints and estimated losses."""

    def __init__(self, space: SearchSpace, hints: Hints, est: list[list[float]],
                 accuracy_budget: float, temperature: float):
        self.depth = len(space.gemms)
        self.saving = [np.asarray(s, dtype=np.float64) for s in hints.saving]
        self.est = [np.asarray(e, dtype=np.float64) for e in est]
        self.s_max = max(float(s.max()) for s in self.saving) or 1.0
        # The price of accuracy: spending the whole budget is worth half of everything
        # there is to save, so loss goes where it saves most, not to whichever GEMM
        # comes first.
        self.price = 0.5 * sum(float(s.max()) for s in self.saving) / self.s_max
        self.budget = max(accuracy_budget, 1e-12)
        self.temperature = temperature
        self.kappa = 1.0          # measured loss / estimated loss, learnt as the run goes
        self._ratios: list[float] = []

    def observe(self, choice: Choice, delta: float) -> None:
        """Calibrate the additive loss estimate on a measured assignment: the policy
        scales every estimate by the median ratio measured / estimated."""
        est = sum(self.est[g][c] for g, c in enumerate(choice))
        if est > 0:
            self._ratios.append(max(delta, 0.0) / est)
            self.kappa = float(np.clip(np.median(self._ratios), 0.25, 8.0))

    def order(self, g: int) -> list[int]:
        if g >= self.depth:
            return []
        value = self.saving[g] / self.s_max - self.price * self.kappa * self.est[g] / self.budget
        return sorted(range(len(value)), key=lambda c: (-value[c], c))

    def rollout(self, prefix: list[int], rng: np.random.Generator, heat: float = 1.0
                ) -> Choice:
        choice = list(prefix)
        k = self.kappa
        spent = k * sum(self.est[g][c] for g, c in enumerate(prefix))
        for g in range(len(prefix), self.depth):
            over = np.maximum(0.0, spent + k * self.est[g] - self.budget) / self.budget
            value = self.saving[g] / self.s_max - self.price * k * self.est[g] / self.budget
            score = (value - over) / (self.temperature * heat)
            p = np.exp(score - score.max())
            c = int(rng.choice(len(p), p=p / p.sum()))
            choice.append(c)
            spent += k * self.est[g][c]
        return tuple(choice)
