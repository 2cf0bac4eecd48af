"""timm's DeiT-tiny (``deit_tiny_patch16_224``, random weights, 224x224, batch 1) through
`axsa.models.byom.approximate`, with timm's fused attention (SDPA) and its explicit one:
every GEMM routed and counted, bit-exact against the independent fake-quant reference of
test_byom, and each GEMM's approximate outputs equal to plain table gathers."""

import copy
import functools

import pytest
import torch
from axsa.models.approx import ProductTable
from axsa.models.byom import approximate
from axsa.models.vision import import_timm
from axsa.rtl.multipliers import parse_spec
from test_byom import SpyHook, check_gathers, ref_product, reference_forward

timm = import_timm()  # the vision extra, installed by scripts/setup

BLOCKS = 12
PER_BLOCK = ("attn.qkv", "attn.qk", "attn.av", "attn.proj", "mlp.fc1", "mlp.fc2")
NAMES = (["patch_embed.proj"] + [f"blocks.{i}.{g}" for i in range(BLOCKS) for g in PER_BLOCK]
         + ["head"])


def ref_timm_attention(mod, x, path, prods):
    """timm's Attention.forward (no mask, eval) with the reference products."""
    B, N, _ = x.shape
    qkv = mod.qkv(x).reshape(B, N, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = mod.q_norm(q), mod.k_norm(k)
    if mod.fused_attn:           # axsa's SDPA: (Q K^T) * 1/sqrt(dh), softmax, A V
        s = ref_product(q, k.transpose(-2, -1), *prods[f"{path}.qk"]) \
            * (1 / q.shape[-1] ** 0.5)
    else:
        s = ref_product(q * mod.scale, k.transpose(-2, -1), *prods[f"{path}.qk"])
    x = ref_product(torch.softmax(s, dim=-1), v, *prods[f"{path}.av"])
    x = x.transpose(1, 2).reshape(B, N, mod.attn_dim)
    return mod.proj(mod.norm(x))


@functools.lru_cache(maxsize=2)
def build(fused: bool):
    """(DeiT-tiny with timm's fused or explicit attention, an input, the routed model)."""
    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    attn = [m for m in net.modules() if type(m).__name__ == "Attention"]
    assert len(attn) == BLOCKS
    for m in attn:
        m.fused_attn = fused
    x = torch.randn(1, 3, 224, 224)
    return net, x, approximate(net, [x])


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "explicit"])
def deit(request):
    return build(request.param)


def test_every_linear_conv_and_attention_product_routed(deit):
    net, x, model = deit
    names = model.gemm_names()
    assert names == NAMES
    assert len(names) == BLOCKS * (4 + 2) + 2
    assert model.hook.tables == {}


def test_exact_tables_equal_the_fake_quant_reference(deit):
    net, x, model = deit
    with torch.no_grad():
        got = model(x)
    want = reference_forward(model, net, x,
                             {f"blocks.{i}.attn": ref_timm_attention for i in range(BLOCKS)})
    assert torch.equal(got, want)
    assert got.shape == (1, 1000)


def test_approximate_tables_equal_plain_gathers():
    net, x, model = build(True)
    m = copy.deepcopy(model)
    drum = ProductTable.from_multiplier(parse_spec("drum(k=4)@s8"))
    mitchell = ProductTable.from_multiplier(parse_spec("mitchell@s8"))
    tables = {n: drum for n in NAMES}
    for n in ("blocks.0.attn.qk", "blocks.5.attn.av", "blocks.11.mlp.fc1", "head"):
        tables[n] = mitchell
    m.hook.assign(tables)
    spy = m.hook = SpyHook(m.hook)
    with torch.no_grad():
        approx = m.set_mode("integer")(x)
    assert [s[0] for s in spy.seen] == NAMES
    assert check_gathers(spy.seen, tables, samples=6) == len(NAMES)
    g = dict((s[0], s) for s in spy.seen)
    _, a, b, _ = g["blocks.3.attn.qk"]            # (1, heads, tokens, dh) @ (.., dh, tokens)
    assert a.shape == (1, 3, 197, 64) and b.shape == (1, 3, 64, 197)
    with torch.no_grad():
        assert not torch.equal(approx, model(x))
