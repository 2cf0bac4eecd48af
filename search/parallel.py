"""Accuracy evaluations in parallel: local worker processes or an existing Dask cluster.

What is evaluated is a `ModelSource`: a small picklable value naming a built-in
checkpoint, or a user's PyTorch model (factory, data file, calibration settings, an
optional fine-tuned state). A worker rebuilds the model from it once (cached per process)
and scores assignments; the parent keeps the results store, so an evaluation is recorded
exactly once, as soon as it arrives, and a search killed mid-batch loses only the
evaluations still in flight.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from axsa.errors import InputError, ToolError

__all__ = ["ModelSource", "Pool", "load_model", "score"]

#: seconds to wait for a Dask scheduler
DASK_CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class ModelSource:
    """The model of a search, rebuilt the same in any process.

    Either a built-in model (`builtin`: ``kind`` and/or ``ckpt``, None for the shipped
    demo checkpoint), or a user's PyTorch model (`byom`: the ``torch_model`` factory
    spec, the ``data`` .npz, ``calib``, ``bits``, ``observer``, ``percentile`` of
    `axsa.models.byom.load_torch_model`, and ``ckpt``, a state of `axsa finetune
    --torch-model`), split for the search by `axsa.models.byom.search_splits`.
    """

    kind: str | None = None
    ckpt: str | None = None
    torch_model: str | None = None
    data: str | None = None
    calib: int = 256
    bits: int | None = None
    observer: str | None = None
    percentile: float | None = None

    @classmethod
    def builtin(cls, kind: str | None, ckpt: str | None = None) -> ModelSource:
        return cls(kind=kind, ckpt=ckpt)

    @classmethod
    def byom(cls, torch_model: str, data: str | None, calib: int = 256,
              bits: int | None = None, observer: str | None = None,
              percentile: float | None = None, ckpt: str | None = None) -> ModelSource:
        """A user's model; the data, checkpoint and factory file paths made absolute
        (worker processes need not share the working directory)."""
        where, sep, name = torch_model.rpartition(":")
        if sep and (where.endswith(".py") or "/" in where):
            torch_model = f"{Path(where).resolve()}:{name}"
        return cls(torch_model=torch_model, calib=calib, bits=bits, observer=observer,
                   percentile=percentile,
                   data=None if data is None else str(Path(data).resolve()),
                   ckpt=None if ckpt is None else str(Path(ckpt).resolve()))

    @property
    def is_byom(self) -> bool:
        return self.torch_model is not None

    def describe(self, model) -> dict:
        """The fields of the search's JSON naming this model."""
        if not self.is_byom:
            return {"model": model.kind, "checkpoint": self.ckpt}
        return {"model": self.torch_model, "torch_model": self.torch_model,
                "data": self.data, "calib": self.calib, "bits": model.config.bits,
                "observer": model.config.observer, "checkpoint": self.ckpt}

    def identity(self, model, ds) -> str:
        """The results-store identity of this source's `model` (`model_eval.model_identity`):
        its configuration and state; for a user's model also the splits of `ds` and the
        code (its classes' source files and the factory's file)."""
        from .model_eval import model_identity
        if not self.is_byom:
            return model_identity(model)
        return model_identity(model, ds, self._factory_files())

    def _factory_files(self) -> list[str]:
        """The source file of the factory's module (when Python can find it)."""
        import importlib.util
        where = self.torch_model.rpartition(":")[0]
        if where.endswith(".py") or "/" in where:
            return [where] if Path(where).is_file() else []
        try:
            spec = importlib.util.find_spec(where)
        except (ImportError, ValueError):
            return []
        origin = spec.origin if spec is not None else None
        return [origin] if origin and Path(origin).is_file() else []

    def pinned(self, model, ds, directory: str | Path) -> ModelSource:
        """For the workers: this source with the parent's calibrated state of a user's
        `model` (of dataset `ds`) written to ``directory/model-<identity>.pt``, which each
        worker loads over the model it builds: a factory need not build the same weights
        in every process (training, say, depends on the thread count). A built-in model,
        or a user's model already from a checkpoint, is returned as it is."""
        if not self.is_byom or self.ckpt is not None:
            return self
        from axsa.models import byom as B
        path = Path(directory).resolve() / f"model-{self.identity(model, ds)}.pt"
        B.save_checkpoint(model, path, self.torch_model, {"pinned_by": "axsa search"})
        return dataclasses.replace(self, ckpt=str(path))

    def save_checkpoint(self, model, path: str | Path, meta: dict) -> Path:
        """Write a (fine-tuned) `model` of this source where `axsa eval` reads it:
        ``--ckpt`` of a built-in model, or ``--torch-model ... --ckpt``."""
        if self.is_byom:
            from axsa.models import byom as B
            return B.save_checkpoint(model, path, self.torch_model, meta)
        from axsa.models import train as T
        return T.save_checkpoint(model, path, None, meta)


@functools.lru_cache(maxsize=2)
def load_model(source: ModelSource):
    """(model, dataset) of `source`, once per process: a checkpoint (None: the shipped
    demo model of its kind) and its data, or a user's calibrated model and the search's
    splits of its data file."""
    if source.is_byom:
        from axsa.models import byom as B
        model, ds = B.load_torch_model(source.torch_model, source.data, source.calib,
                                       source.bits, source.observer, source.percentile,
                                       source.ckpt)
        return model, B.search_splits(ds, source.data)
    from axsa.models import train as T
    model, data, _ = T.load_checkpoint(source.ckpt, source.kind)
    return model, T.load_data(model.kind, data, model)


def score(source: ModelSource, assignment: dict, split: str) -> dict:
    """Metrics of `assignment` ({gemm: spec or {spec, mode}}; GEMMs left out are exact)
    on `split`, in any process."""
    from axsa.models import train as T
    from axsa.models.assignment import resolve_assignment

    model, ds = load_model(source)
    tables = resolve_assignment(model, assignment, "search assignment").tables
    saved = dict(model.hook.tables)
    model.hook.clear()
    model.hook.assign(tables)
    try:
        return T.metrics(model, getattr(ds, split), "integer")
    finally:
        model.hook.tables = saved


def _init_worker() -> None:
    # Die with the parent (a killed search leaves no worker behind); one thread per
    # worker: the workers are the parallelism.
    import torch

    from axsa.processes import die_with_parent
    die_with_parent()
    torch.set_num_threads(1)


class Pool:
    """`map(assignments, split)` -> metrics, over `jobs` processes or a Dask cluster, each
    rebuilding the model of `source` (see `ModelSource.pinned`)."""

    def __init__(self, source: ModelSource, jobs: int = 1, dask_address: str | None = None):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise InputError(f"-j must be a positive integer, not {jobs!r}")
        self.source, self.jobs = source, jobs
        self._pool = self._client = None
        if dask_address:
            try:
                from dask.distributed import Client
                self._client = Client(dask_address, timeout=DASK_CONNECT_TIMEOUT)
            except OSError as exc:
                raise ToolError(f"cannot reach the Dask scheduler at {dask_address!r}: "
                                f"{exc}") from None
        elif jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(
                "spawn"), initializer=_init_worker)

    @property
    def parallel(self) -> bool:
        return self._pool is not None or self._client is not None

    def map(self, assignments: Sequence[dict], split: str) -> list[dict]:
        if self._client is not None:
            futures = [self._client.submit(score, self.source, a, split, pure=False)
                       for a in assignments]
            return self._client.gather(futures)
        if self._pool is not None:
            n = len(assignments)
            return list(self._pool.map(score, [self.source] * n, assignments, [split] * n))
        return [score(self.source, a, split) for a in assignments]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()
