"""The whole integer model on the accelerator RTL (axsa.model_sim, axsa.sim.network).

Compiled designs are shared by the whole session (one DesignCache per engine and array);
few samples per test. The assignment MIXED puts drum on fc1 and two modes of cfgtrunc on
the attention products, so a run switches modes between GEMMs of one design.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from axsa.models import assignment as A
from axsa.models import train as T
from axsa.models.gemm import GemmMismatch
from axsa.rtl.multipliers import exact_multiplier, parse_spec
from axsa.sim.network import AcceleratorBackend, DesignCache, pe_streams

from axsa.errors import ToolError
from axsa.model_sim import RtlMismatch, simulate_model, split_head

MIXED = {"layers.0.attn.qk": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 2},
         "layers.0.attn.av": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 3},
         "layers.0.ffn.fc1": "drum(k=3)@s8",
         "head": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 1}}


@pytest.fixture(scope="session")
def cxx():
    with DesignCache("cxxrtl", 4, 3) as designs:
        yield designs


@pytest.fixture(scope="session")
def models():
    out = {}
    for kind in ("ts", "vit"):
        model, source, _ = T.load_checkpoint(None, kind)
        out[kind] = (model, T.load_data(kind, source, model))
    return out


def _gemm_shapes(kind, n):
    """(G, M, K, N) per GEMM over n samples, from the default model configs."""
    if kind == "ts":
        tokens, d, heads, ff, first, first_k, out = 24, 32, 1, 64, "embed", 1, 1
    else:
        tokens, d, heads, ff, first, first_k, out = 16, 32, 2, 64, "patch", 4, 10
    dh = d // heads
    lin = lambda k, n_: [1, n * tokens, k, n_]  # noqa: E731
    return {first: lin(first_k, d), "layers.0.attn.q": lin(d, d), "layers.0.attn.k": lin(d, d),
            "layers.0.attn.v": lin(d, d), "layers.0.attn.qk": [n * heads, tokens, dh, tokens],
            "layers.0.attn.av": [n * heads, tokens, tokens, dh],
            "layers.0.attn.out": lin(d, d), "layers.0.ffn.fc1": lin(d, ff),
            "layers.0.ffn.fc2": lin(ff, d), "head": [1, n, d, out]}


def _cycles(G, M, K, N, R, C):
    """The cycle model, written out: T tiles back to back."""
    T_ = G * -(-M // R) * -(-N // C)
    return K + (T_ - 1) * max(K, R, C) + R + C + 7


def _check_report(rep, model, ds, n, entries, R, C, batches):
    split = split_head(ds.test, n)
    assert rep["bit_exact"] is True and rep["mismatch"] is None
    assert rep["samples"] == n
    # the emulated metric is the models' own evaluation of the same assignment
    tables = A.resolve_assignment(model, entries or {}).tables
    ev = T.metrics_of(model.kind, split, _integer(model, split, tables))
    name = "rmse" if model.kind == "ts" else "top1"
    assert rep["metric"] == {"name": name, "value": ev[name]}
    assert rep["emulated_metric"] == rep["metric"]
    shapes = _gemm_shapes(model.kind, n)
    assert [g["name"] for g in rep["gemms"]] == list(shapes)
    for g in rep["gemms"]:
        G, M, K, N = shapes[g["name"]]
        assert g["shape"] == [G, M, K, N]
        assert g["macs"] == G * M * K * N
        assert g["runs"] == len(batches)
        # one run per forward pass: a Linear's rows are its samples' tokens, an attention
        # product runs samples x heads GEMMs
        want = sum(_cycles(1, M * b // n, K, N, R, C) if G == 1 else
                   _cycles(G * b // n, M, K, N, R, C) for b in batches)
        assert g["cycles"] == g["predicted_cycles"] == want
        entry = (entries or {}).get(g["name"])
        spec = entry if isinstance(entry, str) else (entry or {}).get("spec", "exact@s8")
        assert g["spec"] == parse_spec(spec).spec
        assert g["mode"] == (entry.get("mode", 0) if isinstance(entry, dict) else 0)
    assert rep["macs"] == sum(g["macs"] for g in rep["gemms"])
    assert rep["cycles"] == rep["predicted_cycles"] == sum(g["cycles"] for g in rep["gemms"])
    assert rep["utilization"] == pytest.approx(rep["macs"] / (rep["cycles"] * R * C))
    for key in ("energy", "energy_ratio", "pe_energy", "pe_energy_ratio", "wall_s",
                "mac_per_s"):
        assert key in rep and all(key in g for g in rep["gemms"])


def _integer(model, split, tables):
    saved = dict(model.hook.tables)
    model.hook.assign(tables)
    try:
        return T.predict(model, split.x, "integer")
    finally:
        model.hook.tables = saved


@pytest.mark.parametrize("kind", ["ts", "vit"])
@pytest.mark.parametrize("entries", [None, MIXED], ids=["exact", "mixed"])
def test_model_bit_exact_cxxrtl(cxx, models, kind, entries):
    model, ds = models[kind]
    n = 3
    rep = simulate_model(model, split_head(ds.test, n), entries, cxx, batch=2,
                         check_gemms=True, energy=entries is not None)
    _check_report(rep, model, ds, n, entries, 4, 3, [2, 1])
    if entries is None:
        assert rep["energy"] is None
    else:
        by = {g["name"]: g for g in rep["gemms"]}
        assert by["layers.0.attn.q"]["energy_ratio"] == 1.0      # exact: the reference
        assert by["layers.0.ffn.fc1"]["energy_ratio"] < 1.0       # drum(k=3) saves
        assert 0 < rep["energy_ratio"] < 1.0 and 0 < rep["pe_energy_ratio"] < 1.0
        if kind == "ts":   # the approximation shows in the output (the check bites)
            exact = T.metrics_of(kind, split_head(ds.test, n),
                                 _integer(model, split_head(ds.test, n), {}))
            assert exact["rmse"] != rep["metric"]["value"]


@pytest.mark.parametrize("kind", ["ts", "vit"])
def test_model_bit_exact_verilator(models, kind):
    model, ds = models[kind]
    with DesignCache("verilator", 4, 3) as designs:
        rep = simulate_model(model, split_head(ds.test, 3), MIXED, designs, batch=2,
                             check_gemms=True, energy=False)
    _check_report(rep, model, ds, 3, MIXED, 4, 3, [2, 1])


@pytest.mark.parametrize("kind", ["ts", pytest.param("vit", marks=pytest.mark.slow)])
def test_model_bit_exact_pysim(models, kind):
    model, ds = models[kind]
    with DesignCache("pysim", 3, 2) as designs:
        rep = simulate_model(model, split_head(ds.test, 1), MIXED, designs, check_gemms=True,
                             energy=False)
    _check_report(rep, model, ds, 1, MIXED, 3, 2, [1])


def test_mismatch_names_gemm_sample_element(cxx, models):
    # the hook's reference multiplies fc1 exactly, the RTL through drum(k=3): the first
    # difference is where the two accumulators of fc1 first differ
    model, ds = models["ts"]
    x = ds.test.x[:3]
    drum = parse_spec("drum(k=3)@s8")
    recs = T.record_streams(model, x)
    a, b = recs["layers.0.ffn.fc1"]             # (3, 24, 32), (3, 32, 64)
    from axsa.models.approx import emulate_gemm
    got = np.stack([emulate_gemm(a[g], b[g], drum) for g in range(3)])
    want = np.einsum("gmk,gkn->gmn", a, b)
    first = tuple(int(i) for i in np.argwhere(got != want)[0])
    backend = AcceleratorBackend({"layers.0.ffn.fc1": (drum, 0)}, exact_multiplier("s8"), cxx)
    model.hook.backend, model.hook.check = backend, True
    try:
        with pytest.raises(GemmMismatch) as info, torch.no_grad():
            model.set_mode("integer")(x)
    finally:
        model.hook.backend, model.hook.check = None, False
    e = info.value
    assert (e.gemm, e.sample, e.element) == ("layers.0.ffn.fc1", first[0], first[1:])
    assert (e.got, e.want) == (int(got[first]), int(want[first]))
    assert "fc1" in str(e) and f"sample {first[0]}" in str(e)
    assert isinstance(e, ToolError) and issubclass(RtlMismatch, ToolError)   # exit 1


def test_batch_driver_equals_single_gemms(cxx):
    # 5 GEMMs back to back in one run = 5 runs of run_gemm, cycles by the model
    from axsa.sim.driver import Requant, run_gemm, run_gemm_batch
    rng = np.random.default_rng(1)
    mult = parse_spec("cfgtrunc(k=0/2/4/6)@s8")
    eng = cxx.engine(mult, 28)
    A_ = rng.integers(-128, 128, (5, 7, 9))
    B_ = rng.integers(-128, 128, (5, 9, 4))
    rq = Requant(m=[1 << 20, 3 << 19, 5 << 18, 7 << 17], s=[24, 23, 22, 21], bits=8)
    res = run_gemm_batch(A_, B_, eng, mode=3, requant=rq)
    for g in range(5):
        one = run_gemm(A_[g], B_[g], mult, engine="emulate", mode=3, requant=rq)
        assert np.array_equal(res.C[g], one.C)
    assert res.cycles == res.predicted_cycles == _cycles(5, 7, 9, 4, 4, 3)
    shared = run_gemm_batch(A_, B_[:1], eng, mode=0)
    want = np.stack([run_gemm(A_[g], B_[0], mult, engine="emulate").C for g in range(5)])
    assert np.array_equal(shared.C, want)


def _loop_streams(A_, B_, R, C):
    """PE streams by explicit loops (the array's order), PE after PE; clr per tile."""
    G, M, K = A_.shape
    N = B_.shape[2]
    mt, nt = -(-M // R), -(-N // C)
    sa, sb, clr = [], [], []
    for r in range(R):
        for c in range(C):
            for g in range(G):
                for i in range(mt):
                    for j in range(nt):
                        for k in range(K):
                            row, col = i * R + r, j * C + c
                            sa.append(A_[g, row, k] if row < M else 0)
                            sb.append(B_[g if B_.shape[0] > 1 else 0, k, col]
                                      if col < N else 0)
                            clr.append(k == 0)
    return np.array(sa), np.array(sb), np.array(clr)


def test_pe_streams_order():
    rng = np.random.default_rng(2)
    A_ = rng.integers(-9, 9, (2, 5, 3))
    B_ = rng.integers(-9, 9, (2, 3, 4))
    a, b = pe_streams(A_, B_, 2, 3)
    la, lb, _ = _loop_streams(A_, B_, 2, 3)
    assert np.array_equal(a.ravel(), la) and np.array_equal(b.ravel(), lb)


def test_energy_known_answer():
    # trunc(k=8) drops partial-product columns 0..7. With operands whose low 4 bits are 0
    # those columns never toggle in the exact multiplier either, so truncation saves less:
    # the ratio to exact rises; and every figure equals the characterization of the same
    # PE streams (synth.energy on the stream built by explicit loops)
    from axsa.synth.energy import mac_energy, multiplier_energy, stream_from_values
    rng = np.random.default_rng(3)
    trunc, exact = parse_spec("trunc(k=8)@s8"), exact_multiplier("s8")
    ratios = []
    for scale in (1, 16):
        A_ = rng.integers(-128 // scale, 128 // scale, (1, 6, 40)) * scale
        B_ = rng.integers(-128 // scale, 128 // scale, (1, 40, 5)) * scale
        with DesignCache("pysim", 2, 2) as designs:
            backend = AcceleratorBackend({"g": (trunc, 0)}, exact, designs)
            C = backend("g", A_[0], B_[0], None)
            assert np.array_equal(C, run_emulate(A_[0], B_[0], trunc))
            e = backend.energy()["g"]
        sa, sb, clr = _loop_streams(A_, B_, 2, 2)
        assert e.ops == e.priced_ops == sa.size == 2 * 2 * 3 * 3 * 40
        s = stream_from_values(sa, sb, trunc.fmt, clr=clr)
        n = sa.size - 1
        want = {m.spec: (multiplier_energy(m, s)["energy_dynamic"] * n,
                         mac_energy(m, backend.acc_width, s)["energy_dynamic"] * n)
                for m in (trunc, exact)}
        assert e.mult == pytest.approx(want[trunc.spec][0], rel=1e-6)
        assert e.pe == pytest.approx(want[trunc.spec][1], rel=1e-6)
        assert e.exact_mult == pytest.approx(want[exact.spec][0], rel=1e-6)
        assert e.exact_pe == pytest.approx(want[exact.spec][1], rel=1e-6)
        ratios.append(e.mult / e.exact_mult)
    assert ratios[0] < 1.0 and ratios[1] < 1.0
    assert ratios[1] > ratios[0] + 0.05, ratios


def run_emulate(a, b, mult):
    from axsa.sim.driver import emulate_gemm
    return emulate_gemm(a, b, mult)


def test_cli_sim_model_json(cxx):
    cmd = [sys.executable, "-m", "axsa.cli", "sim", "model", "--model", "ts", "--samples",
           "1", "--rows", "4", "--cols", "3", "--assign", "-", "--json"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "'-' does not exist" in bad.stderr
    cmd = cmd[:-3] + ["--mult", "drum(k=3)@s8", "--no-energy", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    for key in ("bit_exact", "samples", "metric", "emulated_metric", "cycles",
                "predicted_cycles", "utilization", "macs", "energy", "energy_ratio",
                "pe_energy", "pe_energy_ratio", "wall_s", "mac_per_s", "gemms"):
        assert key in rep
    assert rep["bit_exact"] is True and rep["samples"] == 1
    assert {g["spec"] for g in rep["gemms"]} == {"drum(k=3)@s8"}
    assert "GEMM 10/10 done (head)" in proc.stderr
    for args, word in ((["--mult", "nope@s8"], "nope"), (["--rows", "0"], "rows"),
                       (["--mult", "exact@u8"], "signed")):
        p = subprocess.run(cmd[:7] + ["--samples", "1"] + args, capture_output=True,
                           text=True)
        assert p.returncode == 2 and word in p.stderr, p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ts", "vit"])
def test_whole_test_split_metric_equals_emulation(cxx, models, kind):
    # the RTL's RMSE / top-1 over the whole test split, approximate assignment, equals
    # the models' own integer evaluation of that assignment exactly
    model, ds = models[kind]
    rep = simulate_model(model, ds.test, MIXED, cxx, energy=False)
    tables = A.resolve_assignment(model, MIXED).tables
    ev = T.evaluate(model, ds, tables)["approx"]
    name = "rmse" if kind == "ts" else "top1"
    assert rep["bit_exact"] and rep["samples"] == len(ds.test.x)
    assert rep["metric"]["value"] == rep["emulated_metric"]["value"] == ev[name]
    assert rep["cycles"] == rep["predicted_cycles"]
