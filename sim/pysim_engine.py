"""The `Engine` API (see `axsa.sim.engine`) on Amaranth's Python simulator.

Slow (a 16x16 array runs a few thousand cycles per second) but needs no compiler, and
writes VCD waveforms. Use it for unit tests and for looking at waveforms; use
`axsa.sim.cxxrtl.CxxrtlEngine` for anything large.

How it works: one testbench (``add_testbench``, ``ctx.set/get``) lives as long as the
engine and serves the runs one after another. It drives the ``sync`` clock itself,
rather than through ``add_clock``, so that no clock edge happens between runs: between
runs it only waits (``ctx.delay``) for the next job. One clock period is 10 ns of
simulated time in the VCD.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockDomain, Const, Elaboratable, Fragment, Instance, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from axsa.rtl.cells import CELL_PREFIX

from axsa.errors import InputError

from .engine import Engine, PlainPort, _Job, ints_to_words, words_to_ints

__all__ = ["PysimEngine"]

HALF_PERIOD = 5e-9


class _Top(Elaboratable):
    """The component under an explicit ``sync`` domain whose clock the testbench drives."""

    def __init__(self, component: wiring.Component):
        self.component = component
        self.cd_sync = ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.cd_sync
        m.submodules.dut = self.component
        return m


def _reject_instances(fragment, path=("top",)) -> None:
    # Amaranth's simulator leaves the outputs of an Instance at 0 without a word.
    for sub, name, _ in fragment.subfragments:
        sub_path = (*path, str(name))
        if isinstance(sub, Instance) and sub.type.startswith(CELL_PREFIX):
            raise InputError(
                f"pysim cannot simulate the multiplier cell {sub.type!r} at "
                f"{'.'.join(sub_path)}: build the design in the circuit or table view, "
                "or use the cxxrtl engine")
        if isinstance(sub, Instance):
            raise InputError(
                f"pysim cannot simulate the Verilog instance {sub.type!r} at "
                f"{'.'.join(sub_path)} (an imported multiplier?): use the cxxrtl engine")
        _reject_instances(sub, sub_path)


class PysimEngine(Engine):
    """Amaranth pysim engine.

    Parameters
    ----------
    component : wiring.Component
        Top-level design (one ``sync`` domain).
    vcd : str or Path, optional
        Write every signal's waveform to this VCD file; it is complete after `close()`
        (or leaving the ``with`` block). `reset()` is not available while writing a VCD.
    """

    name = "pysim"

    def __init__(self, component: wiring.Component, vcd: str | Path | None = None):
        super().__init__(component)
        self._top = _Top(component)
        fragment = Fragment.get(self._top, None)
        _reject_instances(fragment)
        self._sim = Simulator(fragment)
        self._result = None
        self._sim.add_testbench(self._testbench)
        self._vcd_cm = None
        if vcd is not None:
            self._vcd_cm = self._sim.write_vcd(str(vcd))
            self._vcd_cm.__enter__()
        self._pending: dict = {}
        self._task = None
        self._sim.advance()  # start the testbench (no clock edge)

    async def _testbench(self, ctx):
        clk = self._top.cd_sync.clk
        while True:
            if self._task is None:
                await ctx.delay(HALF_PERIOD)
                continue
            task, self._task = self._task, None
            try:
                for sig, value in self._pending.values():
                    ctx.set(sig, value)
                self._pending = {}
                self._result = ("ok", await task(ctx, clk))
            except Exception as exc:  # noqa: BLE001 (handed to the caller; the testbench lives on)
                self._result = ("error", exc)

    def _call(self, task):
        """Run ``await task(ctx, clk)`` inside the resident testbench; return its value."""
        self._result = None
        self._task = task
        while self._result is None:
            self._sim.advance()
        kind, value = self._result
        self._result = None
        if kind == "error":
            raise value
        return value

    async def _serve(self, ctx, clk, job: _Job):
        feeds = [(p, words_to_ints(w)) for p, w in job.feeds]
        index = [0] * len(feeds)
        drains = [(p, n) for p, n in job.drains]
        got: list[list[int]] = [[] for _ in drains]
        need = sum(n for _, n in drains)
        feeds_left = sum(len(items) for _, items in feeds)
        done_when_feeds = not drains
        cycles = 0
        finished = (need == 0) if not done_when_feeds else (feeds_left == 0)
        while not finished:
            if cycles >= job.max_cycles:
                cycles = -1
                break
            # present this cycle's items and readiness (clock low)
            ctx.set(clk, 0)
            for k, (p, items) in enumerate(feeds):
                if index[k] < len(items):
                    ctx.set(p.payload, items[index[k]])
                    ctx.set(p.valid, 1)
                else:
                    ctx.set(p.valid, 0)
            for k, (p, n) in enumerate(drains):
                if not isinstance(p.ready, Const):
                    ctx.set(p.ready, int(len(got[k]) < n))
            # sample what transfers at the coming edge
            fire_f = [index[k] < len(items) and ctx.get(p.ready)
                      for k, (p, items) in enumerate(feeds)]
            fire_d = [len(got[k]) < n and ctx.get(p.valid) for k, (p, n) in enumerate(drains)]
            data_d = [ctx.get(p.payload) if fire_d[k] else None
                      for k, (p, _) in enumerate(drains)]
            await ctx.delay(HALF_PERIOD)
            ctx.set(clk, 1)
            cycles += 1
            for k, fire in enumerate(fire_f):
                if fire:
                    index[k] += 1
                    feeds_left -= 1
            for k, fire in enumerate(fire_d):
                if fire:
                    got[k].append(data_d[k])
                    need -= 1
            finished = feeds_left == 0 if done_when_feeds else need == 0
            await ctx.delay(HALF_PERIOD)
        # idle the streams between runs
        ctx.set(clk, 0)
        for p, _ in feeds:
            ctx.set(p.valid, 0)
        for p, _ in drains:
            if not isinstance(p.ready, Const):
                ctx.set(p.ready, 0)
        outputs = {p.name: ints_to_words(got[k], p.width, f"drain {p.name!r}")
                   for k, (p, _) in enumerate(drains)}
        accepted = {p.name: index[k] for k, (p, _) in enumerate(feeds)}
        return outputs, cycles, accepted

    # Engine hooks

    def _run(self, job: _Job):
        return self._call(lambda ctx, clk: self._serve(ctx, clk, job))

    def _set_input(self, port: PlainPort, value: int) -> None:
        if port.shape.signed and value >> (port.shape.width - 1):
            value -= 1 << port.shape.width
        self._pending[port.name] = (port.signal, value)

    def _read(self, port: PlainPort) -> int:
        async def get(ctx, clk):
            return ctx.get(port.signal)
        return int(self._call(get)) & ((1 << len(port.signal)) - 1)

    def _reset(self) -> None:
        if self._vcd_cm is not None:
            raise RuntimeError("PysimEngine.reset() is not available while writing a VCD")
        self._pending = {}
        self._job_now = None
        self._result = None
        self._task = None
        self._sim.reset()

    def close(self) -> None:
        if self._vcd_cm is not None:
            self._vcd_cm.__exit__(None, None, None)
            self._vcd_cm = None

