"""Accuracy evaluations in parallel: local worker processes or an existing Dask cluster.

A worker rebuilds the model once (from the checkpoint, cached per process) and scores
assignments; the parent keeps the results store, so an evaluation is recorded exactly
once, as soon as it arrives, and a search killed mid-batch loses only the evaluations
still in flight.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from axsa.errors import InputError, ToolError

__all__ = ["Pool", "load_model", "score"]

#: seconds to wait for a Dask scheduler
DASK_CONNECT_TIMEOUT = 10


@functools.lru_cache(maxsize=2)
def load_model(ckpt: str | None, kind: str):
    """(model, dataset) of a checkpoint (None: the shipped demo model of `kind`), once
    per process."""
    from axsa.models import train as T
    model, source, _ = T.load_checkpoint(ckpt, kind)
    return model, T.load_data(model.kind, source, model)


def score(ckpt: str | None, kind: str, assignment: dict, split: str) -> dict:
    """Metrics of `assignment` ({gemm: spec or {spec, mode}}; GEMMs left out are exact)
    on `split`, in any process."""
    from axsa.models import train as T
    from axsa.models.assignment import resolve_assignment

    model, ds = load_model(ckpt, kind)
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
    """`map(assignments, split)` -> metrics, over `jobs` processes or a Dask cluster."""

    def __init__(self, ckpt: str | None, kind: str, jobs: int = 1,
                 dask_address: str | None = None):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise InputError(f"-j must be a positive integer, not {jobs!r}")
        self.ckpt, self.kind, self.jobs = ckpt, kind, jobs
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
            futures = [self._client.submit(score, self.ckpt, self.kind, a, split, pure=False)
                       for a in assignments]
            return self._client.gather(futures)
        if self._pool is not None:
            return list(self._pool.map(score, *zip(*[(self.ckpt, self.kind, a, split)
                                                     for a in assignments])))
        return [score(self.ckpt, self.kind, a, split) for a in assignments]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()
