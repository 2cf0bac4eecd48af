"""A quantized model's integer forward pass with every GEMM on the accelerator RTL.

The wiring of `axsa sim model` (and of any library user): the model's GEMM hook
(`axsa.models.gemm`) gets the numpy backend of `axsa.sim.network`, which runs each GEMM on
the RTL of its multiplier; the non-linear integer ops stay on the host in the model's own
integer code. The model's outputs are checked against a separate emulated pass (the same
assignment through product tables), whose metric is reported beside the RTL's; a pass
whose outputs differ runs again with every GEMM checked against the hook's own
bit-exact GEMM, to name the first differing GEMM, sample and element (``check_gemms``
checks every GEMM of every pass).

>>> from axsa.models.train import load_checkpoint
>>> from axsa.sim.network import DesignCache
>>> model, source, _ = load_checkpoint(None, "ts")
>>> with DesignCache("cxxrtl", 16, 16) as designs:
...     report = simulate_model(model, split, {"head": "drum(k=4)@s8"}, designs)
>>> report["bit_exact"], report["metric"], report["gemms"][0]["cycles"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from axsa.errors import ToolError

__all__ = ["RtlMismatch", "exact_energy_reference", "simulate_model", "split_head"]

class RtlMismatch(ToolError):
    """The RTL's result differs from the integer reference (exit 1)."""


def split_head(split, n: int | None):
    """The first `n` samples of a data split (all of them for None)."""
    from dataclasses import replace
    if n is None or n >= len(split.x):
        return split
    off = split.offset[:n] if split.offset is not None else None
    return replace(split, x=split.x[:n], y=split.y[:n], offset=off)


def simulate_model(model, split, entries: Mapping | None, designs, batch: int | None = None,
                   check_gemms: bool = False, energy: bool = True,
                   energy_ops: int | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   source: str = "assignment") -> dict:
    """Run `split` through `model` with every GEMM on the RTL; the report (see below).

    Parameters
    ----------
    model : QuantModel
        A calibrated model (`axsa.models.train.load_checkpoint`).
    split : Split
        Inputs and targets (`split_head` for a few samples).
    entries : mapping or None
        The assignment ``{gemm: spec | {"spec", "mode"}}`` (`axsa.models.assignment`);
        None or empty: every GEMM exact.
    designs : axsa.sim.network.DesignCache
        Engine, array size and the designs, reused across calls.
    batch : int, optional
        Samples per forward pass (their tokens are the rows of each Linear GEMM);
        default all of them: one engine run per GEMM (and its emulation check), so the
        array is full and no emulation kernel is tuned for a repeated shape.
    check_gemms : bool
        Compare every GEMM's RTL result with the hook's own bit-exact GEMM (else the
        model's outputs are compared with the emulated pass, and only a forward pass
        whose outputs differ is run again GEMM by GEMM to find the first difference).
    energy : bool
        Price the PE operand streams (`AcceleratorBackend.energy`).
    energy_ops : int, optional
        Operations priced per GEMM (default `axsa.sim.network.DEFAULT_ENERGY_OPS`).
    progress : callable, optional
        ``progress(runs_done, runs, gemm name)`` after every GEMM run on the RTL
        (``runs`` = GEMMs x forward passes).

    Returns
    -------
    dict
        ``bit_exact``, ``samples``, ``metric`` / ``emulated_metric`` (``{"name",
        "value"}``: RMSE for ts, top-1 for vit), ``cycles``, ``predicted_cycles``,
        ``utilization``, ``macs``, ``energy``, ``energy_ratio`` (multipliers, pJ per
        inference, ratio to the exact multiplier on the same streams), ``pe_energy``,
        ``pe_energy_ratio`` (whole MACs), ``wall_s`` (the RTL pass, host ops included,
        design builds excluded), ``mac_per_s``, ``cpu_s`` (process CPU of the RTL
        pass, builds included when there were any), ``emulate_s``, ``build_s``,
        ``energy_s``,
        ``engine``, ``array``, and ``gemms``: per GEMM the same keys plus ``name``,
        ``spec``, ``mode``, ``shape``.

    Raises
    ------
    RtlMismatch
        On the first GEMM whose RTL result differs from the reference: its name, the
        sample and the element.
    """
    import torch

    from axsa.models import assignment as A
    from axsa.models.gemm import GemmMismatch
    from axsa.models.train import metrics_of, predict
    from axsa.rtl.multipliers import exact_multiplier
    from axsa.sim.network import DEFAULT_ENERGY_OPS, AcceleratorBackend

    resolved = A.resolve_assignment(model, entries or {}, source)
    kind = model.kind
    metric_name = "rmse" if kind == "ts" else "top1"
    n = len(split.x)
    hook = model.hook
    saved = dict(hook.tables)
    threads = torch.get_num_threads()
    try:
        hook.assign(resolved.tables)
        t0 = time.perf_counter()
        batch = n if batch is None else batch
        emulated = predict(model, split.x, "integer", batch=batch)
        emulate_s = time.perf_counter() - t0
        exact = exact_multiplier(f"s{model.config.bits}")
        runs = len(model.gemm_names()) * -(-n // batch)
        done = iter(range(1, runs + 1))
        report = (lambda name, _st: progress(next(done), runs, name)) if progress else None
        backend = AcceleratorBackend(resolved.multipliers, exact, designs, progress=report)
        hook.backend = backend
        model.set_mode("integer").eval()
        # one host thread: torch's idle worker threads spin while the simulation runs in
        # C++, which costs the simulation a core on a small machine (measured: twice the
        # CPU time for the same wall time)
        torch.set_num_threads(1)
        outs = []
        build0 = designs.build_s
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for i in range(0, n, batch):
                xb = split.x[i:i + batch]
                try:
                    hook.check = check_gemms
                    outs.append(model(xb))
                    if not check_gemms and not torch.equal(outs[-1], emulated[i:i + batch]):
                        hook.check = True     # locate it: the batch again, GEMM by GEMM
                        model(xb)
                except GemmMismatch as exc:
                    raise RtlMismatch(
                        f"the RTL differs from the integer reference in GEMM {exc.gemm!r}, "
                        f"sample {i + exc.sample}, element {exc.element}: {exc.got} instead "
                        f"of {exc.want} ({backend.multiplier(exc.gemm)[0].spec}, "
                        f"{designs.name})") from None
        build_s = designs.build_s - build0
        wall_s = time.perf_counter() - t0 - build_s
        cpu_s = time.process_time() - c0
    finally:
        hook.backend, hook.check = None, False
        hook.tables = saved
        torch.set_num_threads(threads)
    out = torch.cat(outs)
    bit_exact = bool(torch.equal(out, emulated))
    t0 = time.perf_counter()
    energies = backend.energy(energy_ops or DEFAULT_ENERGY_OPS) if energy else {}
    energy_s = time.perf_counter() - t0
    R, C = designs.rows, designs.cols
    gemms = []
    for name in model.gemm_names():
        st = backend.stats.get(name)
        if st is None:
            continue
        row = {"name": name, "spec": st.spec, "mode": st.mode,
               "multiplier": resolved.specs.get(name, st.spec), "shape": list(st.shape),
               "runs": st.runs, "tiles": st.tiles, **_figures(
                   st.macs, st.cycles, st.predicted_cycles, st.wall_s, R, C,
                   energies.get(name), n)}
        gemms.append(row)
    e = list(energies.values())
    total = _figures(sum(g["macs"] for g in gemms), sum(g["cycles"] for g in gemms),
                     sum(g["predicted_cycles"] for g in gemms), wall_s, R, C,
                     _sum_energy(e) if e else None, n)
    mismatch = None
    if not bit_exact:
        where = int(torch.nonzero((out != emulated).reshape(n, -1).any(dim=1))[0])
        mismatch = (f"the model's output for sample {where} differs from the integer "
                    "reference although every GEMM agreed")
    return {
        "model": kind, "bit_exact": bit_exact, "samples": n, "engine": designs.name,
        "array": [R, C], "assignment": resolved.specs,
        "metric": {"name": metric_name, "value": metrics_of(kind, split, out)[metric_name]},
        "emulated_metric": {"name": metric_name,
                            "value": metrics_of(kind, split, emulated)[metric_name]},
        **total, "cpu_s": cpu_s, "emulate_s": emulate_s, "build_s": build_s,
        "energy_s": energy_s,
        "vcd": designs.vcd_files, "mismatch": mismatch, "gemms": gemms,
    }


def _sum_energy(items):
    from axsa.sim.network import GemmEnergy
    return GemmEnergy(*(sum(getattr(x, f) for x in items) for f in (
        "mult", "pe", "exact_mult", "exact_pe", "ops", "priced_ops")))


def _figures(macs, cycles, predicted, wall_s, rows, cols, energy, samples) -> dict:
    """The report keys shared by a GEMM and the total; energy in pJ per inference."""
    d = {"cycles": cycles, "predicted_cycles": predicted,
         "utilization": macs / (cycles * rows * cols) if cycles else 0.0, "macs": macs,
         "wall_s": wall_s, "mac_per_s": macs / wall_s if wall_s > 0 else float("inf")}
    if energy is None:
        d.update(energy=None, energy_ratio=None, pe_energy=None, pe_energy_ratio=None)
    else:
        d.update(energy=energy.mult / samples / 1e3,
                 energy_ratio=energy.mult / energy.exact_mult if energy.exact_mult else None,
                 pe_energy=energy.pe / samples / 1e3,
                 pe_energy_ratio=energy.pe / energy.exact_pe if energy.exact_pe else None,
                 energy_ops=energy.ops, energy_priced_ops=energy.priced_ops)
    return d


def exact_energy_reference(report: dict) -> dict:
    """Per GEMM name, (assigned, all-exact) multiplier energy in pJ per inference."""
    out = {}
    for g in report["gemms"]:
        if g["energy"] is not None and g["energy_ratio"]:
            out[g["name"]] = (g["energy"], g["energy"] / g["energy_ratio"])
    return out
