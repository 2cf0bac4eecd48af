"""Bring your own model (axsa.models.byom): routing, bit-exactness against an independent
fake-quant reference, the digits CNN through PTQ, an aggressive multiplier and
approximate-aware fine-tuning, the errors, and `axsa eval/finetune --torch-model`."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from axsa.models import train as T
from axsa.models.approx import ProductTable
from axsa.models.byom import approximate
from axsa.models.data import Dataset, Split
from axsa.models.gemm import GemmHook
from axsa.rtl.multipliers import parse_spec
from torch import nn

from axsa.cli import main
from axsa.errors import InputError

QMAX = 127


# -- the independent reference: quantize with the model's scales, integer GEMMs, rescale --

def codes(x, scale):
    """Signed 8-bit codes clamp(floor(x / scale + 0.5)) in float32 arithmetic (the
    model's dtype), as float64 holding integers."""
    q = torch.floor(x.detach() / scale.to(torch.float32) + 0.5).clamp(-QMAX - 1, QMAX)
    return q.to(torch.float64)


def weight_scales(w):
    return w.detach().abs().to(torch.float64).reshape(w.shape[0], -1).amax(1) \
        .clamp_min(1e-8) / QMAX


def ref_linear(x, lin, sx):
    sw = weight_scales(lin.weight)
    acc = codes(x, sx) @ codes(lin.weight, sw[:, None]).t()       # float64: exact
    y = acc.to(torch.float32) * (sx * sw).to(torch.float32)
    return y if lin.bias is None else y + lin.bias.detach()


def ref_conv(x, conv, sx):
    sw = weight_scales(conv.weight)
    qx = codes(x, sx)
    padding = conv.padding
    if conv.padding_mode != "zeros":
        ph, pw = conv.padding
        qx, padding = F.pad(qx, (pw, pw, ph, ph), mode=conv.padding_mode), 0
    acc = F.conv2d(qx, codes(conv.weight, sw[:, None, None, None]), None, conv.stride,
                   padding, conv.dilation, conv.groups)              # float64: exact
    y = acc.to(torch.float32) * (sx * sw).to(torch.float32)[None, :, None, None]
    return y if conv.bias is None else y + conv.bias.detach()[None, :, None, None]


def ref_product(a, b, sa, sb):
    acc = codes(a, sa).to(torch.int64) @ codes(b, sb).to(torch.int64)
    return acc.to(torch.float32) * (sa * sb).to(torch.float32)


def scales(model):
    """{gemm: input scale} of routed modules, {product: (scale a, scale b)}."""
    ins = {m.name: m.aq.observer.scale() for m in model.net.modules() if hasattr(m, "aq")}
    prods = {k.replace(":", "."): (p.a.observer.scale(), p.b.observer.scale())
             for k, p in model.products.items()}
    return ins, prods


def reference_forward(model, net, x, attention=None):
    """The float `net` with every Linear / Conv2d output replaced by its reference, and
    the modules of ``attention`` ({path: fn(module, x, path, product scales)}) by
    theirs."""
    ins, prods = scales(model)
    handles = []
    for path, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            fn = lambda m, i, o, p=path: ref_linear(i[0], m, ins[p])       # noqa: E731
        elif isinstance(mod, nn.Conv2d):
            fn = lambda m, i, o, p=path: ref_conv(i[0], m, ins[p])         # noqa: E731
        elif attention and path in attention:
            fn = lambda m, i, o, p=path, f=attention[path]: f(m, i[0], p, prods)  # noqa: E731
        else:
            continue
        handles.append(mod.register_forward_hook(fn))
    try:
        with torch.no_grad():
            return net(x)
    finally:
        for h in handles:
            h.remove()


class SpyHook(GemmHook):
    """The hook, keeping every GEMM's operands and result."""

    def __init__(self, hook):
        super().__init__()
        self.names, self.tables, self.seen = list(hook.names), dict(hook.tables), []

    def __call__(self, name, a, b, integer, stage=None):
        out = super().__call__(name, a, b, integer, stage)
        self.seen.append((name, a, b, out))
        return out


def check_gathers(seen, tables, samples=12, seed=0):
    """Each recorded GEMM's sampled outputs equal sum_k lut[code(a), code(b)] (plain
    numpy gather); returns how many GEMMs went through a table."""
    rng = np.random.default_rng(seed)
    through = 0
    for name, a, b, out in seen:
        bshape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        A = a.expand(*bshape, *a.shape[-2:]).reshape(-1, *a.shape[-2:]).to(torch.int64)
        B = b.expand(*bshape, *b.shape[-2:]).reshape(-1, *b.shape[-2:]).to(torch.int64)
        C = out.reshape(A.shape[0], A.shape[1], B.shape[2])
        table = tables.get(name)
        lut = table.table if table is not None else None
        through += table is not None
        for _ in range(samples):
            g, m, n = (int(rng.integers(s)) for s in (A.shape[0], A.shape[1], B.shape[2]))
            ca, cb = A[g, m, :].numpy() & 0xFF, B[g, :, n].numpy() & 0xFF
            want = int(lut[ca, cb].sum()) if lut is not None else \
                int((A[g, m, :] * B[g, :, n]).sum())
            assert int(C[g, m, n]) == want, (name, g, m, n)
    return through


# -- small models -------------------------------------------------------------------------

class TinyAttention(nn.Module):
    """Multi-head self-attention, fused (SDPA) or explicit (q @ k^T, attn @ v)."""

    def __init__(self, d=16, heads=2, fused=True):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.heads, self.dh, self.fused = heads, d // heads, fused

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4) \
            .unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.dh ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def ref_tiny_attention(mod, x, path, prods):
    B, N, C = x.shape
    q, k, v = mod.qkv(x).reshape(B, N, 3, mod.heads, mod.dh).permute(2, 0, 3, 1, 4).unbind(0)
    if mod.fused:
        s = ref_product(q, k.transpose(-2, -1), *prods[f"{path}.qk"]) * (1 / math.sqrt(mod.dh))
    else:
        s = ref_product(q * mod.dh ** -0.5, k.transpose(-2, -1), *prods[f"{path}.qk"])
    x = ref_product(torch.softmax(s, dim=-1), v, *prods[f"{path}.av"])
    return mod.proj(x.transpose(1, 2).reshape(B, N, C))


class ConvNet(nn.Module):
    """Every Conv2d variant the im2col GEMM handles, then attention over the pixels."""

    def __init__(self, fused=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=2)
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False)
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.depthwise = nn.Conv2d(16, 16, (3, 1), stride=(1, 2), padding=(1, 0), groups=16)
        self.attn = TinyAttention(16, 2, fused)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.depthwise(F.relu(self.reflect(self.grouped(F.relu(self.stem(x))))))
        return self.head(self.attn(x.flatten(2).transpose(1, 2)).mean(1))


NAMES = ["stem", "grouped", "reflect", "depthwise", "attn.qkv", "attn.qk", "attn.av",
         "attn.proj", "head"]


@pytest.fixture(scope="module", params=[True, False], ids=["sdpa", "explicit"])
def convnet(request):
    torch.manual_seed(1)
    net = ConvNet(request.param).eval()
    x = torch.randn(3, 3, 15, 15)
    return net, x, approximate(net, [x[:2], x[2:]])


def test_every_gemm_routed_and_bit_exact(convnet):
    net, x, model = convnet
    assert model.gemm_names() == NAMES
    with torch.no_grad():
        got = model.set_mode("fake_quant")(x)
        integer = model.set_mode("integer")(x)
        model.set_mode("fake_quant")
    want = reference_forward(model, net, x, {"attn": ref_tiny_attention})
    assert torch.equal(got, want)
    assert torch.equal(integer, want)
    assert not torch.equal(got, net(x))        # quantized: not the float model


def test_per_gemm_tables_equal_plain_gathers(convnet):
    net, x, model = convnet
    m = copy.deepcopy(model)
    drum = ProductTable.from_multiplier(parse_spec("drum(k=3)@s8"))
    mitchell = ProductTable.from_multiplier(parse_spec("mitchell@s8"))
    tables = {n: drum for n in NAMES}
    tables["attn.qk"] = tables["grouped"] = mitchell
    m.hook.assign(tables)
    spy = m.hook = SpyHook(m.hook)
    m.set_mode("integer")
    with torch.no_grad():
        m(x)
    assert [s[0] for s in spy.seen] == NAMES
    assert check_gathers(spy.seen, tables) == len(NAMES)


def test_assignment_names_and_recording(convnet, tmp_path):
    net, x, _ = convnet
    model = approximate(net, [x], {"attn.qk": "drum(k=3)@s8"}, record=True)
    assert set(model.hook.tables) == {"attn.qk"}
    with torch.no_grad():
        model(x[:2])
    recs = model.hook.stop_recording()
    assert list(recs) == NAMES
    a, b = recs["stem"]                 # (B, L, Cin*kh*kw) @ (K, Cout): 8x8 output pixels
    assert a.shape == (2, 49, 27) and b.shape == (2, 27, 8)
    a, b = recs["grouped"]              # (B*groups, L, K) @ (B*groups, K, Cout/groups)
    assert a.shape == (4, 49, 36) and b.shape == (4, 36, 8)
    a, b = recs["attn.qk"]              # (B*heads, N, dh) @ (B*heads, dh, N)
    assert a.shape == (4, 28, 8) and b.shape == (4, 8, 28)
    assert np.abs(a).max() <= 128
    path, = model.hook.save_streams({"attn.av": recs["attn.av"]}, tmp_path)
    f = np.load(path)
    assert f["shape"].tolist() == [4, 28, 28, 8]
    assert f["a"].shape == (4 * 28 * 28 * 8,)
    with pytest.raises(InputError, match="unknown GEMM.*this model has: stem, grouped"):
        approximate(net, [x], {"attn.q": "drum(k=3)@s8"})


def test_percentile_observer_clips_below_minmax(convnet):
    net, x, model = convnet
    pct = approximate(net, [x], observer="percentile", percentile=99.0)
    lo = pct.net.stem.aq.observer.scale()
    hi = model.net.stem.aq.observer.scale()
    # the 99th percentile of |x| over one batch of 3 * 3 * 15 * 15 samples
    want = torch.quantile(x.abs().to(torch.float64).reshape(-1), 0.99) / QMAX
    assert torch.isclose(lo, want, rtol=1e-12) and lo < hi
    assert hi == x.abs().max().to(torch.float64) / QMAX


# -- what cannot be routed ------------------------------------------------------------------

class Wrap(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.fn, self.mods = fn, nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize("fn, mods, match", [
    (lambda s, x: torch.einsum("bi,ij->bj", x, s.mods[0].weight.t()), [nn.Linear(4, 4)],
     r"torch\.einsum called in module '<top level>'"),
    (lambda s, x: s.mods[0](x) @ torch.ones(4, 4), [Wrap(lambda s, x: x)],
     r"matmul in module '<top level>'"),
    (lambda s, x: s.mods[0](x, x, x)[0], [nn.MultiheadAttention(4, 2, batch_first=True)],
     r"F\.multi_head_attention_forward .* in module 'mods\.0'"),
    (lambda s, x: F.scaled_dot_product_attention(x, x, x, enable_gqa=True), [],
     r"enable_gqa=True\) in module '<top level>'"),
])
def test_unroutable_ops_are_named(fn, mods, match):
    x = torch.randn(2, 3, 4)
    with pytest.raises(InputError, match=match):
        approximate(Wrap(fn, *mods), [x])


class ThreeMatmulAttention(nn.Module):
    def forward(self, x):
        return (x @ x.transpose(-2, -1)) @ x @ x.transpose(-2, -1)


def test_third_matmul_in_attention_and_uncalibrated_branch():
    with pytest.raises(InputError, match="'<top level>' calls a matmul after"):
        approximate(ThreeMatmulAttention(), [torch.randn(2, 3, 3)])
    with pytest.raises(InputError, match="attention module.*'nope' not in the model"):
        approximate(nn.Sequential(nn.Linear(4, 4)), [torch.randn(2, 4)], attention=["nope"])

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) if x.shape[0] > 1 else self.b(x)
    model = approximate(Branch(), [torch.randn(2, 4)])
    assert model.gemm_names() == ["a", "b"]
    with pytest.raises(InputError, match="GEMM 'b' was not calibrated"):
        model(torch.randn(1, 4))


# -- the digits CNN: PTQ, an aggressive multiplier, approximate-aware fine-tuning -----------

AGGRESSIVE = "drum(k=2)@s8"


@pytest.fixture(scope="module")
def digits_cnn():
    from axsa.examples.digits_cnn import digits, train_cnn
    d = digits()
    net = train_cnn(epochs=10, seed=0)
    ds = Dataset("classifier", Split(*d["train"]), Split(*d["val"]), Split(*d["test"]))
    return net, ds


def top1(model, split):
    with torch.no_grad():
        return float((model(split.x).argmax(-1) == split.y).to(torch.float64).mean())


def test_cnn_ptq_aggressive_multiplier_and_finetuning(digits_cnn):
    net, ds = digits_cnn
    calib = list(ds.train.x[:256].split(64))
    fp32 = top1(net, ds.test)
    exact = approximate(net, calib, bits=8)
    assert exact.gemm_names() == ["conv1", "conv2", "fc", "head"]
    assert abs(top1(exact, ds.test) - fp32) <= 0.01
    model = approximate(net, calib, AGGRESSIVE, bits=8)
    before = top1(model, ds.test)
    lost = fp32 - before
    assert lost >= 0.03                       # several points
    tables = dict(model.hook.tables)
    assert set(tables) == set(exact.gemm_names())
    T.finetune(model, ds, tables, epochs=4, lr=3e-3, batch=64, seed=0)
    assert model.hook.tables == tables        # still approximate
    after = top1(model.set_mode("integer"), ds.test)
    assert after - before >= lost / 2
    assert top1(net, ds.test) == fp32         # the user's model is not touched


# -- the command line ---------------------------------------------------------------------

def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


FACTORY = '''
import torch
from torch import nn

def factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 10))

def boom():
    raise RuntimeError("the factory is broken")
'''


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("byom")
    (d / "my_byom_model.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    np.savez(d / "data.npz", x=x, y=y)
    np.savez(d / "no_y.npz", x=x)
    np.savez(d / "flat.npz", x=x.reshape(40, 64), y=y)
    return d


def test_eval_shipped_example(capsys, tmp_path):
    from axsa.examples.digits_cnn import CALIB, make_data
    data = make_data(tmp_path / "digits.npz")
    rc, out, err = run(capsys, "eval", "--torch-model", "axsa.examples.digits_cnn:factory",
                       "--data", str(data), "--calib", str(CALIB), "--mult", AGGRESSIVE,
                       "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["test_samples"] == 270 and res["bits"] == 8
    assert res["assignment"] == {n: AGGRESSIVE for n in ["conv1", "conv2", "fc", "head"]}
    assert res["integer"] == res["fake_quant"]
    assert abs(res["integer"]["top1"] - res["fp32"]["top1"]) <= 0.01
    assert res["approx"]["top1"] <= res["fp32"]["top1"] - 0.03


def test_eval_and_finetune_a_factory_file(capsys, tmp_path, user_files, monkeypatch):
    data = str(user_files / "data.npz")
    by_file = f"{user_files / 'my_byom_model.py'}:factory"
    rc, out, err = run(capsys, "eval", "--torch-model", by_file, "--data", data,
                       "--calib", "16", "--list-gemms", "--json")
    assert rc == 0, err
    gemms = json.loads(out)["gemms"]
    assert gemms == [{"name": "0", "shape": [1, 64, 9, 4]},
                     {"name": "3", "shape": [1, 1, 256, 10]}]
    monkeypatch.syspath_prepend(str(user_files))
    rc, out, err = run(capsys, "eval", "--torch-model", "my_byom_model:factory", "--data",
                       data, "--calib", "16", "--mult", "trunc(k=4)@s8", "--record",
                       str(tmp_path / "streams"), "--samples", "2", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["test_samples"] == 24
    assert sorted(p.name for p in (tmp_path / "streams").iterdir()) == ["0.npz", "3.npz"]
    assert np.load(tmp_path / "streams" / "0.npz")["shape"].tolist() == [2, 64, 9, 4]
    ck = tmp_path / "ft.pt"
    rc, out, err = run(capsys, "finetune", "--torch-model", by_file, "--data", data,
                       "--calib", "16", "--mult", "trunc(k=4)@s8", "--epochs", "2",
                       "--out", str(ck), "--json")
    assert rc == 0, err
    ft = json.loads(out)
    assert ft["before"]["approx"] == res["approx"]
    rc, out, err = run(capsys, "eval", "--torch-model", by_file, "--data", data, "--calib",
                       "16", "--mult", "trunc(k=4)@s8", "--ckpt", str(ck), "--json")
    assert rc == 0, err
    assert json.loads(out)["approx"] == ft["after"]["approx"]


@pytest.mark.parametrize("model, data, extra, match", [
    ("no_such_module_xyz:factory", "data.npz", [], "cannot import module 'no_such_module_xyz'"),
    ("{dir}/missing.py:factory", "data.npz", [], "file '.*missing.py' does not exist"),
    ("{dir}/my_byom_model.py:nope", "data.npz", [], "has no callable 'nope'"),
    ("{dir}/my_byom_model.py:boom", "data.npz", [], "raised RuntimeError: the factory is"),
    ("{dir}/my_byom_model.py:factory", "no_y.npz", [], "has no array 'y'"),
    ("{dir}/my_byom_model.py:factory", "flat.npz", [], r"x of shape \(24, 64\)"),
    ("{dir}/my_byom_model.py:factory", "data.npz", ["--calib", "40"], "--calib 40 must"),
    ("{dir}/my_byom_model.py", "data.npz", [], "must be 'package.module:factory'"),
])
def test_bad_torch_model_input_exits_2(capsys, user_files, model, data, extra, match):
    import re
    rc, out, err = run(capsys, "eval", "--torch-model", model.format(dir=user_files),
                       "--data", str(user_files / data), "--calib", "16", *extra)
    assert rc == 2
    assert re.search(match, err), err
    assert "Traceback" not in err
