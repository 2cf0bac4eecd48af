"""The two quantized transformers: integer path vs fake-quant, determinism, the GEMM hook."""

import numpy as np
import pytest
import torch
from axsa.models import train as T
from axsa.models.approx import ProductTable, approx_matmul
from axsa.models.gemm import GemmHook
from axsa.rtl.multipliers import parse_spec

from axsa.errors import InputError

torch.set_num_threads(1)
QUICK = T.TrainConfig(epochs=2, qat_epochs=1, calib_batches=4)


@pytest.fixture(scope="module", params=["ts", "vit"])
def trained(request):
    kind = request.param
    ds = T.load_data(kind)
    small = dict(d_model=16, ff=32, heads=2) if kind == "ts" else dict(d_model=16, ff=32)
    model, _ = T.fit(kind, 6, QUICK, ds=ds, **small)
    return model, ds


def test_gemm_names(trained):
    model, _ = trained
    first = "embed" if model.kind == "ts" else "patch"
    assert model.gemm_names() == [
        first, "layers.0.attn.q", "layers.0.attn.k", "layers.0.attn.v", "layers.0.attn.qk",
        "layers.0.attn.av", "layers.0.attn.out", "layers.0.ffn.fc1", "layers.0.ffn.fc2",
        "head"]


def test_integer_equals_fake_quant_within_one_step(trained):
    model, ds = trained
    fq = T.predict(model, ds.test.x, "fake_quant")
    it = T.predict(model, ds.test.x, "integer")
    step = float(model.head.oq.scale())          # one step of the 16-bit output codes
    assert float((fq - it).abs().max()) <= step
    fp = T.predict(model, ds.test.x, "fp32")       # and quantization changed something
    assert not torch.equal(fp, it)


def test_integer_path_is_deterministic(trained):
    model, ds = trained
    a = T.predict(model, ds.test.x, "integer")
    torch.set_num_threads(2)
    try:
        b = T.predict(model, ds.test.x.flip(0), "integer").flip(0)
    finally:
        torch.set_num_threads(1)
    assert torch.equal(a, b)


def test_training_is_deterministic():
    ds = T.load_data("ts")
    tc = T.TrainConfig(epochs=1, qat_epochs=1, calib_batches=2)
    outs = []
    for _ in range(2):
        model, _ = T.fit("ts", 4, tc, ds=ds, d_model=8, ff=16)
        outs.append(T.predict(model, ds.test.x[:64], "integer"))
    assert torch.equal(outs[0], outs[1])


def test_exact_table_equals_torch_integer_matmul(trained):
    model, ds = trained
    recs = T.record_streams(model, ds.test.x[:3])
    exact = ProductTable.from_multiplier(parse_spec("exact@s8"))
    for name, (a, b) in recs.items():
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), exact)
        assert torch.equal(got, torch.matmul(torch.from_numpy(a), torch.from_numpy(b))), name


def test_hook_routes_through_the_table(trained):
    """An approximate table changes exactly the GEMM it is assigned to, by the gather."""
    model, ds = trained
    spec = parse_spec("drum(k=3)@s8")
    table = ProductTable.from_multiplier(spec)
    x = ds.test.x[:2]
    recs = T.record_streams(model, x, {"head": table})
    a, b = recs["head"]
    lut = spec.model_table()
    gather = lut[a[:, :, :, None] & 255, b[:, None, :, :] & 255].sum(axis=2)
    hook = GemmHook()
    hook.register("g")
    hook.assign({"g": table})
    got = hook("g", torch.from_numpy(a), torch.from_numpy(b), integer=True)
    assert np.array_equal(got.numpy(), gather)
    assert not np.array_equal(gather, np.matmul(a, b))
    # the GEMMs before the head saw the same operands with and without the table
    plain = T.record_streams(model, x)
    assert np.array_equal(plain["layers.0.ffn.fc2"][0], recs["layers.0.ffn.fc2"][0])


def test_export_integer_reproduces_the_first_layer(trained):
    """numpy on the exported integer constants == the first Linear's integer forward."""
    model, ds = trained
    first = model.gemm_names()[0]
    exp = T.export_integer(model)
    a, _ = T.record_streams(model, ds.test.x[:2])[first]        # (G, M, K) input codes
    acc = a @ exp[f"{first}.weight"].T + exp[f"{first}.bias"]
    m, s = exp[f"{first}.m"], exp[f"{first}.s"]
    expect = np.clip((acc * m + (1 << (s - 1))) >> s, -32, 31)  # 6-bit codes
    mod = model.patch if model.kind == "vit" else model.embed
    codes, _ = mod((torch.from_numpy(a), torch.tensor(exp[f"{first}.scale_in"])))
    assert np.array_equal(codes.numpy(), expect)


def test_stream_files(tmp_path):
    hook = GemmHook()
    a = np.arange(2 * 3 * 2).reshape(2, 3, 2) - 5
    b = np.arange(2 * 2 * 4).reshape(2, 2, 4) - 7
    hook.save_streams({"x.y": (a, b)}, tmp_path)
    f = np.load(tmp_path / "x.y.npz")
    assert f["shape"].tolist() == [2, 3, 2, 4]
    # output-stationary: output (g, m, n) after output, k = 0..K-1 within each
    pairs = [(a[g, m, k], b[g, k, n]) for g in range(2) for m in range(3) for n in range(4)
             for k in range(2)]
    assert list(zip(f["a"].tolist(), f["b"].tolist())) == [tuple(map(int, p)) for p in pairs]
    assert f["clr"].tolist() == [1, 0] * (2 * 3 * 4)
    assert np.array_equal(f["lhs"], a) and np.array_equal(f["rhs"], b)


def test_unknown_gemm_name_is_input_error(trained):
    model, _ = trained
    with pytest.raises(InputError, match="layers.9.attn.q"):
        model.hook.assign({"layers.9.attn.q": None})


def test_checkpoint_round_trip(trained, tmp_path):
    model, ds = trained
    p = T.save_checkpoint(model, tmp_path / "m.pt")
    again, _, _ = T.load_checkpoint(p)
    assert torch.equal(T.predict(model, ds.test.x[:32], "integer"),
                       T.predict(again, ds.test.x[:32], "integer"))
    with pytest.raises(InputError, match="nope.pt"):
        T.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.pt"):
        T.load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_every_bit_width_is_bit_exact(bits):
    """Untrained but calibrated models at every width: integer == fake-quant, codes in range."""
    torch.manual_seed(bits)
    ts = T.build_model("ts", bits=bits, d_model=8, ff=16, heads=2, window=12, horizon=3,
                       channels=2, observer="percentile")
    vit = T.build_model("vit", bits=bits, d_model=8, ff=16, patch=4, per_channel=False)
    for model, x in ((ts, torch.randn(40, 12, 2)), (vit, torch.rand(40, 8, 8))):
        T.calibrate(model, x, batches=2, batch=20)
        fq = T.predict(model, x, "fake_quant")
        recs = T.record_streams(model, x)
        it = T.predict(model, x, "integer")
        assert torch.equal(fq, it)
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for name, (a, b) in recs.items():
            assert lo <= a.min() and a.max() <= hi and lo <= b.min() and b.max() <= hi, name
    assert it.shape == (40, 10) and T.predict(ts, torch.randn(5, 12, 2), "integer").shape == (
        5, 3, 2)


def test_hook_passes_views_to_the_table_gemm():
    # a Linear hands over its transposed weight, attention a permuted K^T: no copies,
    # integer and fake-quant results both equal the plain table gather
    table = ProductTable.from_multiplier(parse_spec("bam(h=2,v=6)@s8"))
    lut = table.table
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(-128, 128, (2, 24, 32)))
    w = torch.from_numpy(rng.integers(-128, 128, (48, 32)))
    q = torch.from_numpy(rng.integers(-128, 128, (2, 2, 24, 16)))
    k = torch.from_numpy(rng.integers(-128, 128, (2, 24, 2, 16)))
    hook = GemmHook()
    for name in ("fc", "qk"):
        hook.register(name)
    hook.assign({"fc": table, "qk": table})
    for name, a, b in (("fc", x, w.t()), ("qk", q, k.permute(0, 2, 3, 1))):
        assert not b.is_contiguous()
        want = lut[a.numpy()[..., :, :, None] & 255, b.numpy()[..., None, :, :] & 255].sum(-2)
        for _ in range(3):                       # auto: estimate, tune, then the fast path
            got = hook(name, a, b, integer=True)
            assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
        af = a.float().requires_grad_()
        bf = b.float().requires_grad_()
        out = hook(name, af, bf, integer=False)
        assert np.array_equal(out.detach().numpy(), want.astype(np.float32))
        out.sum().backward()                     # straight-through: the exact GEMM's
        ones = torch.ones_like(out)
        assert torch.equal(af.grad, ones @ b.float().transpose(-1, -2))
