"""The whole `axsa search` job as a library call: set up the evaluator, run the method
(and, to compare, the baselines), measure the front on the test split, fine-tune the best
points on request, write the files."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from axsa.errors import InputError

from .model_eval import ModelEvaluator, default_candidates
from .parallel import ModelSource, Pool, load_model
from .report import plot_fronts, write_front
from .run import METHODS, check_budgets, run_search
from .space import Candidate

__all__ = ["SearchJob", "parse_candidates"]


def parse_candidates(text: str | None, bits: int) -> list[Candidate]:
    """Candidates from ``SPEC[#MODE],...`` (None: the default set). The exact
    multiplier of the model's format is added when missing (the reference)."""
    from axsa.rtl.multipliers import exact_multiplier, parse_spec, split_top

    from axsa.formats import Format

    if text is None:
        return default_candidates(bits)
    out = [Candidate(exact_multiplier(Format(True, bits, bits)).spec)]
    for item in split_top(text):
        spec, _, mode = item.partition("#")
        m = parse_spec(spec)
        try:
            modes = [int(mode)] if mode else list(range(m.modes))
        except ValueError:
            raise InputError(f"bad mode {mode!r} in candidate {item!r}: expected SPEC#MODE "
                             "with an integer mode") from None
        for md in modes:
            if not 0 <= md < m.modes:
                raise InputError(f"mode {md} of candidate {item!r} is out of range "
                                 f"0..{m.modes - 1}")
            out.append(Candidate(m.spec, md))
    return list(dict.fromkeys(out))


@dataclass
class SearchJob:
    """Everything `axsa search` takes (see its --help)."""

    source: ModelSource
    candidates: str | None = None
    budget: int = 64
    accuracy_budget: float = 0.02
    method: str = "mcts"
    compare: bool = False
    target: str | None = None
    seed: int = 0
    jobs: int = 1
    dask_address: str | None = None
    finetune_top: int = 0
    finetune_epochs: int = 5
    out: Path = Path(".axsa/search")

    def check(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown search method {self.method!r} "
                             f"(methods: {', '.join(METHODS)})")
        check_budgets(self.budget, self.accuracy_budget)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise InputError(f"-j must be a positive integer, not {self.jobs!r}")
        if self.finetune_top < 0:
            raise InputError(f"--finetune-top must be 0 or more, not {self.finetune_top}")

    def run(self, store, progress: Callable[[str, int, int], None] | None = None) -> dict:
        """Run the job; returns the JSON document (also written to `out`/front.json)."""
        self.check()
        model, ds = load_model(self.source)
        cands = parse_candidates(self.candidates, model.config.bits)
        parallel = self.jobs > 1 or bool(self.dask_address)
        workers = self.source.pinned(model, ds, self.out) if parallel else self.source
        pool = Pool(workers, self.jobs, self.dask_address)
        try:
            ev = ModelEvaluator(self.source, cands, store, target=self.target,
                                pool=pool, progress=lambda d, t, w: progress and progress(
                                    "costs", d, t))
            methods = [self.method] + ([m for m in METHODS if m != self.method]
                                       if self.compare else [])
            results = {}
            for m in methods:
                results[m] = run_search(m, ev, self.budget, self.accuracy_budget, self.seed,
                                        progress=lambda d, t, m=m: progress and progress(
                                            m, d, t))
            main = results[self.method]
            data = main.to_json(ev.space)
            front = main.archive.front()
            tests = ev.test_metrics([c for c, _ in front])
            data.update(**self.source.describe(model), target=self.target,
                        metric=ev.metric_name, reference={"val": ev.reference},
                        candidates=[c.label for c in cands])
            for point, (_, e), t in zip(data["pareto"], front, tests):
                point["metric"] = {"val": e.extra["metric"],
                                   "test": {ev.metric_name: t[ev.metric_name]},
                                   "test_delta": t["delta"]}
            best = main.archive.best(self.accuracy_budget)
            data["chosen"] = None
            if best is not None:
                data["chosen"] = next(p for p, (c, _) in zip(data["pareto"], front)
                                      if c == best[0])
            if self.compare:
                data["compare"] = {m: {"hypervolume": r.hypervolume(),
                                       "evaluations": len(r.archive)}
                                   for m, r in results.items()}
            if self.finetune_top:
                self._finetune(ev, front, data)
            data["computed"] = ev.computed
            files = write_front(data, Path(self.out))
            files.append(plot_fronts(
                {m: [(e.delta, e.energy_ratio) for _, e in r.archive.items()]
                 for m, r in results.items()}, self.accuracy_budget,
                Path(self.out) / "front.png",
                f"{data['model']}: {self.method}, {len(main.archive)} evaluations"))
            data["files"] = [str(p) for p in files]
            return data
        finally:
            pool.close()

    def _finetune(self, ev: ModelEvaluator, front: Sequence, data: dict) -> None:
        """Fine-tune the `finetune_top` lowest-energy front points whose validation loss
        is within twice the budget (fine-tuning may bring them inside it); re-measure."""
        from axsa.models import train as T

        pool = [(i, c, e) for i, (c, e) in enumerate(front)
                if e.delta <= 2 * self.accuracy_budget]
        pool.sort(key=lambda t: t[2].energy_ratio)
        for i, choice, _ in pool[:self.finetune_top]:
            model = copy.deepcopy(ev.model)
            tables = ev.tables(choice)
            T.finetune(model, ev.ds, tables, self.finetune_epochs, 5e-4, seed=self.seed)
            path = Path(self.out) / f"finetuned-{i}.pt"
            ev.source.save_checkpoint(model, path, {"finetuned": {
                "assignment": ev.space.assignment(choice)}})
            m = T.evaluate(model, ev.ds, tables, split="val")["approx"]
            mt = T.evaluate(model, ev.ds, tables, split="test")["approx"]
            v, vt = m[ev.metric_name], mt[ev.metric_name]
            data["pareto"][i]["finetuned"] = {
                "checkpoint": str(path), "val": {ev.metric_name: v}, "delta": ev.delta(v),
                "test": {ev.metric_name: vt}, "test_delta": ev.test_delta(vt)}
