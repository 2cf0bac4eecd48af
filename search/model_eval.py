"""The evaluator of a real model: accuracy by bit-exact emulation, energy by the cost model.

- **Accuracy**: the integer model with the assignment's product table in each GEMM
  (`axsa.models`: a built-in model, or a user's PyTorch model through
  `axsa.models.byom`; a `ModelSource` names either), on the *validation* split; `delta`
  is the relative loss against the all-exact integer model (RMSE up, or top-1 down). The
  test split is measured only for the final front (`test_metric`), so a search never
  fits the test set.
- **Multiplier energy per inference**: ``sum over GEMMs of MACs_g x e(spec, stream_g)``,
  e from the gate-level activity model (`axsa.synth`) under GEMM g's own operand stream,
  recorded on validation samples in the order an output-stationary PE sees it. The
  objective; `pe_energy_ratio` is the same sum over whole MACs (multiplier, accumulator
  and its register), what the chip pays, reported beside it.
- **Area** (optional, ``target``): each PE of the array holds every distinct circuit the
  assignment uses (modes of one configurable multiplier share a circuit), so the area
  ratio is ``sum over distinct circuits of area / area(exact)``: transistors on
  ``generic``, LUT4s (plus carries) on ``ice40`` / ``ecp5``.

Every figure goes through the results store: energies and areas as ``synth`` records,
accuracy evaluations as ``search-eval`` records keyed by the model's identity (a hash of
its weights, scales and configuration; for a user's model also its data splits and
code: `ModelSource.identity`), the split and the assignment. A restarted search answers
every assignment it already evaluated from the store.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from axsa.errors import InputError

from .evaluate import Hints
from .parallel import ModelSource, Pool, load_model
from .pareto import Evaluation
from .space import Candidate, Choice, SearchSpace

__all__ = ["DEFAULT_CANDIDATES", "ModelEvaluator", "default_candidates"]

#: About 15 candidates over several families, from nearly exact to aggressive, as
#: (family, parameters); `default_candidates` adds the modes of the runtime-configurable
#: truncation (one circuit, four depths).
DEFAULT_CANDIDATES = (
    ("exact", {}), ("trunc", {"k": 4}), ("trunc", {"k": 6}), ("trunc", {"k": 8}),
    ("trunc", {"k": 8, "comp": 1}), ("bam", {"h": 1, "v": 6}), ("bam", {"h": 2, "v": 8}),
    ("drum", {"k": 4}), ("drum", {"k": 5}), ("drum", {"k": 6}), ("mitchell", {}),
    ("roba", {}), ("kulkarni", {}), ("ssm", {"m": 6}),
)


def default_candidates(bits: int) -> list[Candidate]:
    """`DEFAULT_CANDIDATES` at signed `bits`-bit operands, plus cfgtrunc's modes 1..3
    (mode 0 is exact), canonical specs, duplicates and misfits dropped."""
    from axsa.rtl.multipliers import SpecError, multiplier

    from axsa.formats import Format

    fmt = Format(True, bits, bits)
    out: list[Candidate] = []
    for family, values in DEFAULT_CANDIDATES:
        try:
            out.append(Candidate(multiplier(family, values, fmt).spec))
        except SpecError:
            continue
    cfg = multiplier("cfgtrunc", {}, fmt)
    out += [Candidate(cfg.spec, m) for m in range(1, cfg.modes)]
    return list(dict.fromkeys(out))


def model_identity(model, ds=None, files: Sequence[str] = ()) -> str:
    """Hash of what a model's accuracy depends on: its configuration and its whole state
    (weights and every calibrated scale). With `ds` (a user's model, whose data is not
    fixed by its kind), also the validation and test splits it is measured on and its
    code: the module tree, the source files of its modules' classes and `files` (the
    factory's; the same weights under an edited ``forward`` are another model)."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if ds is not None:
        for split in (ds.val, ds.test):
            for t in (split.x, split.y):
                h.update(repr((t.dtype, tuple(t.shape))).encode())
                h.update(t.contiguous().numpy().tobytes())
        h.update(repr(model).encode())
        for path in sorted(_class_files(model) | set(files)):
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:20]


def _class_files(model) -> set[str]:
    """The source files of the classes of `model`'s modules (those Python can find)."""
    files = set()
    for mod in model.modules():
        try:
            files.add(inspect.getsourcefile(type(mod)))
        except TypeError:            # a class defined without a file
            continue
    return {f for f in files if f and Path(f).is_file()}


class ModelEvaluator:
    """Evaluator of per-GEMM assignments of one quantized model (see the module doc).

    Parameters
    ----------
    source : ModelSource
        The model: a built-in checkpoint, or a user's PyTorch model and its data.
    candidates : sequence of Candidate
        Candidates of every GEMM; the exact multiplier of the model's format must be
        one of them.
    store : Store
        The results store.
    target : {None, "generic", "ice40", "ecp5"}
        Adds `area_ratio` on that target.
    stream_samples : int
        Validation samples whose operands make each GEMM's energy stream.
    pool : Pool, optional
        Evaluates accuracy in parallel (local processes or Dask); in-process if None.
    progress : callable(done, total, what), optional
        Called while the per-(GEMM, candidate) costs are characterized.
    """

    def __init__(self, source: ModelSource, candidates: Sequence[Candidate],
                 store, target: str | None = None, stream_samples: int = 2,
                 pool: Pool | None = None,
                 progress: Callable[[int, int, str], None] | None = None):
        from axsa.models import train as T
        from axsa.models.assignment import resolve_assignment
        from axsa.rtl.multipliers import exact_multiplier

        from axsa.formats import Format

        model, ds = load_model(source)
        self.source, self.model, self.ds, self.store, self.target = \
            source, model, ds, store, target
        self.pool = pool or Pool(source)
        self.computed = 0          # accuracy evaluations not answered by the store
        bits = model.config.bits
        exact = Candidate(exact_multiplier(Format(True, bits, bits)).spec)
        candidates = list(dict.fromkeys(candidates))
        if exact not in candidates:
            raise InputError(f"the candidates must include the exact multiplier {exact.spec} "
                             "(the reference of every ratio)")
        T.predict(model, ds.val.x[:1], "integer")       # the hook learns the GEMM names
        first = model.gemm_names()[0]
        for c in candidates:                            # each candidate fits the model
            resolve_assignment(model, {first: c.to_json()}, f"candidate {c.label!r}")
        records = T.record_streams(model, ds.val.x[:stream_samples])
        names = [n for n in model.gemm_names() if n in records]
        self.space = SearchSpace.uniform(names, candidates, candidates.index(exact))
        self.identity = source.identity(model, ds)
        self._records = records
        self._macs = np.array([np.prod(records[n][0].shape) * records[n][1].shape[-1]
                               / stream_samples for n in names])
        self._costs(progress)
        self.reference = self._value(self._metrics([self.space.all_exact], "val")[0])
        self.delta(self.reference)                      # a reference of 0 is an error

    # -- costs ---------------------------------------------------------------------------
    def _costs(self, progress) -> None:
        from axsa.models.gemm import GemmHook
        from axsa.synth.characterize import Request, characterize
        from axsa.synth.energy import stream_from_values

        cands = self.space.candidates[0]
        G, C = len(self.space.gemms), len(cands)
        total = G * C * 2 + (C if self.target else 0)
        done = 0
        self._e = np.zeros((G, C))
        self._e_pe = np.zeros((G, C))
        for g, name in enumerate(self.space.gemms):
            a, b = self._records[name]
            sa, sb, clr = GemmHook.pe_streams(a, b)
            for c, cand in enumerate(cands):
                fmt = _fmt(cand)
                stream = stream_from_values(sa, sb, fmt, f"GEMM {name}", clr)
                for unit, out in (("mult", self._e), ("mac", self._e_pe)):
                    req = Request(cand.spec, "generic", unit=unit, mode=cand.mode, fmax=False)
                    out[g, c] = characterize(req, stream, self.store)["energy"]
                    done += 1
                    if progress:
                        progress(done, total, f"energy of {cand.label} at {name}")
        self._area = None
        if self.target:
            key = "transistors" if self.target == "generic" else "luts"
            area = []
            for cand in cands:
                req = Request(cand.spec, self.target, mode=cand.mode, fmax=False)
                r = characterize(req, None, self.store)
                area.append(float(r[key] + r.get("carries", 0)))
                done += 1
                if progress:
                    progress(done, total, f"area of {cand.label} on {self.target}")
            self._area = area
        exact = self.space.exact[0]
        self._e_ref = float(self._macs @ self._e[:, exact])
        self._e_pe_ref = float(self._macs @ self._e_pe[:, exact])

    def energy_ratio(self, choice: Choice) -> float:
        return float(sum(self._macs[g] * self._e[g, c] for g, c in enumerate(choice))
                     / self._e_ref)

    def pe_energy_ratio(self, choice: Choice) -> float:
        return float(sum(self._macs[g] * self._e_pe[g, c] for g, c in enumerate(choice))
                     / self._e_pe_ref)

    def area_ratio(self, choice: Choice) -> float | None:
        if self._area is None:
            return None
        cands = self.space.candidates[0]
        circuits = {cands[c].spec: self._area[c] for c in choice}
        return float(sum(circuits.values()) / self._area[self.space.exact[0]])

    def hints(self) -> Hints:
        saving = self._macs[:, None] * (self._e[:, [self.space.exact[0]]] - self._e) \
            / self._e_ref
        return Hints(tuple(map(tuple, saving.tolist())), tuple(map(tuple, self._errors())))

    def _errors(self) -> list[list[float]]:
        """Relative RMS error of each GEMM's output under each candidate, on its
        recorded operands."""
        if not hasattr(self, "_err"):
            import torch
            from axsa.models.approx import ProductTable, approx_matmul
            from axsa.rtl.multipliers import parse_spec
            err = []
            for name in self.space.gemms:
                a, b = (torch.as_tensor(x) for x in self._records[name])
                ref = torch.matmul(a, b).to(torch.float64)
                norm = float(ref.pow(2).sum().sqrt()) or 1.0
                row = []
                for cand in self.space.candidates[0]:
                    t = ProductTable.from_multiplier(parse_spec(cand.spec), cand.mode)
                    got = approx_matmul(a, b, t).to(torch.float64)
                    row.append(float((got - ref).pow(2).sum().sqrt()) / norm)
                err.append(row)
            self._err = err
        return self._err

    # -- accuracy ------------------------------------------------------------------------
    def _metrics(self, choices: Sequence[Choice], split: str) -> list[dict]:
        """Metrics of each choice on `split`: from the store, the misses evaluated by
        the pool and recorded as they arrive."""
        keys = [{"model": self.identity, "split": split,
                 "assignment": self.space.assignment(c)} for c in choices]
        found = [self.store.get("search-eval", k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            todo = list(dict.fromkeys(todo))
            work = [self.space.approximate_assignment(choices[i]) for i in todo]
            for i, m in zip(todo, self.pool.map(work, split)):
                self.store.put("search-eval", keys[i], m)
                found[i] = m
            self.computed += len(todo)
        return found

    def _value(self, metrics: dict) -> float:
        return float(metrics[self.metric_name])

    @property
    def metric_name(self) -> str:
        return "rmse" if self.model.kind == "ts" else "top1"

    def delta(self, value: float) -> float:
        """Relative loss on the validation split against the all-exact model: RMSE up,
        or top-1 down."""
        return self._loss(value, self.reference, "validation")

    def _loss(self, value: float, ref: float, split: str) -> float:
        if ref == 0:              # top-1 0 (a user's model on few samples): no loss to take
            raise InputError(f"the all-exact model's {self.metric_name} on the {split} "
                             "split is 0: relative losses are undefined (check the model "
                             "and its data, or give more samples)")
        return (value - ref) / ref if self.model.kind == "ts" else (ref - value) / ref

    def evaluate(self, choices: Sequence[Choice]) -> list[Evaluation]:
        out = []
        for choice, m in zip(choices, self._metrics(choices, "val")):
            value = self._value(m)
            extra = {"metric": {self.metric_name: value},
                     "pe_energy_ratio": self.pe_energy_ratio(choice)}
            area = self.area_ratio(choice)
            if area is not None:
                extra["area_ratio"] = area
            out.append(Evaluation(self.delta(value), self.energy_ratio(choice), extra))
        return out

    def test_metrics(self, choices: Sequence[Choice]) -> list[dict]:
        """The test-split metric of each choice and its delta against all-exact on the
        test split, for the final front."""
        ms = self._metrics(list(choices), "test")
        return [{self.metric_name: self._value(m), "delta": self.test_delta(self._value(m))}
                for m in ms]

    def test_delta(self, value: float) -> float:
        """Relative loss on the test split against the all-exact model's."""
        ref = self._value(self._metrics([self.space.all_exact], "test")[0])
        return self._loss(value, ref, "test")

    def tables(self, choice: Choice) -> dict:
        """{gemm: ProductTable} of the choice's approximate GEMMs."""
        from axsa.models.assignment import resolve_assignment
        return resolve_assignment(self.model, self.space.approximate_assignment(choice),
                                  "search assignment").tables


def _fmt(cand: Candidate):
    from axsa.rtl.multipliers import parse_spec
    return parse_spec(cand.spec).fmt
