"""The multiplier library's numpy faces: spec parsing, exactness, and each family's
definition checked against an independent scalar reimplementation."""

import math

import numpy as np
import pytest
from axsa.rtl.multipliers import FAMILIES, Format, SpecError, exact_table, parse_spec

from axsa.errors import InputError

FORMATS = ["s8", "u8", "s4", "u4", "s8x4", "u3x6", "s2", "u2"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("spec", ["exact", "booth", "mul", "trunc(k=0)", "trunc(k=0,comp=1)",
                                  "bam(h=0,v=0)", "perf(j=0)", "drum(k=8)", "drum(k=16)",
                                  "ssm(m=8)", "cfgtrunc(k=0/3)"])
def test_exact_forms_equal_a_times_b(spec, fmt):
    f = Format.parse(fmt)
    if spec == "ssm(m=8)" and max(f.a_width, f.b_width) < 8:
        spec = f"ssm(m={max(f.a_width, f.b_width)})"
    m = parse_spec(f"{spec}@{fmt}")
    a = f.a_values()[:, None]
    b = f.b_values()[None, :]
    assert np.array_equal(m.model_table(0), a * b)


def test_most_negative_square():
    for spec in ("exact@s8", "booth@s8", "drum(k=8)@s8", "ssm(m=8)@s8"):
        t = parse_spec(spec).model_table()
        assert t[128, 128] == 16384, spec  # code 128 is -128
        assert t[128, 127] == -128 * 127, spec


@pytest.mark.parametrize("family", ["drum(k=3)", "mitchell", "roba", "kulkarni", "ssm(m=3)"])
def test_magnitude_families_are_sign_symmetric(family):
    """Sign-magnitude: approx(-a, b) == -approx(a, b), also for a = -2^(w-1), whose
    magnitude 2^(w-1) must not wrap to 0."""
    s = parse_spec(f"{family}@s8")
    u = parse_spec(f"{family}@u8")
    a = np.arange(-128, 128)[:, None]
    b = np.arange(-128, 128)[None, :]
    expect = np.sign(a) * np.sign(b) * u.model(np.abs(a), np.abs(b))
    assert np.array_equal(s.model(a, b), expect)
    assert s.model(np.array(-128), np.array(-128)) == u.model(np.array(128), np.array(128)) > 0


# -- independent scalar definitions, written from the papers --------------------------------

def drum_ref(x, k):
    if x < 2 ** k:
        return x
    t = x.bit_length() - 1
    shift = t - k + 1
    return ((x >> shift) | 1) << shift


def mitchell_ref(a, b, F, t=0):
    if a == 0 or b == 0:
        return 0
    ka, kb = a.bit_length() - 1, b.bit_length() - 1
    fa = math.floor((a / 2 ** ka - 1) * 2 ** F) // 2 ** t * 2 ** t
    fb = math.floor((b / 2 ** kb - 1) * 2 ** F) // 2 ** t * 2 ** t
    s = (fa + fb) / 2 ** F
    value = 2 ** (ka + kb) * (1 + s) if s < 1 else 2 ** (ka + kb + 1) * s
    return math.floor(value)


def roba_ref(a, b):
    def nearest_pow2(x):
        if x == 0:
            return 0
        lo = 2 ** (x.bit_length() - 1)
        return 2 * lo if x - lo >= 2 * lo - x else lo  # ties go up
    ar, br = nearest_pow2(a), nearest_pow2(b)
    return ar * b + a * br - ar * br


def kulkarni_ref(a, b, width):
    if width <= 2:
        return 7 if a == 3 and b == 3 else a * b
    h = 2 * ((width + 3) // 4)  # split into halves of an even number of bits
    al, ah, bl, bh = a % 2 ** h, a >> h, b % 2 ** h, b >> h
    sub = max(h, width - h)
    return (kulkarni_ref(ah, bh, sub) << 2 * h) + (kulkarni_ref(ah, bl, sub) << h) + \
        (kulkarni_ref(al, bh, sub) << h) + kulkarni_ref(al, bl, sub)


def ssm_ref(x, m, w):
    if x < 2 ** m:
        return x
    return x >> (w - m) << (w - m)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_drum_matches_paper(k):
    m = parse_spec(f"drum(k={k})@u8")
    ref = np.array([[drum_ref(a, k) * drum_ref(b, k) for b in range(256)] for a in range(256)])
    assert np.array_equal(m.model_table(), ref)


@pytest.mark.parametrize("t", [0, 3])
def test_mitchell_matches_float_definition(t):
    m = parse_spec(f"mitchell(t={t})@u7")
    ref = np.array([[mitchell_ref(a, b, 6, t) for b in range(128)] for a in range(128)])
    assert np.array_equal(m.model_table(), ref)


def test_roba_matches_definition():
    m = parse_spec("roba@u8")
    ref = np.array([[roba_ref(a, b) for b in range(256)] for a in range(256)])
    assert np.array_equal(m.model_table(), ref)
    assert m.model(np.array(3), np.array(3)) == 8  # rounds 3 -> 4: 12 + 12 - 16


def test_kulkarni_recursive_definition():
    m = parse_spec("kulkarni@u8")
    ref = np.array([[kulkarni_ref(a, b, 8) for b in range(256)] for a in range(256)])
    assert np.array_equal(m.model_table(), ref)
    assert ref[3, 3] == 7 and ref[255, 255] < 255 * 255


def test_ssm_matches_definition():
    m = parse_spec("ssm(m=5)@u8")
    ref = np.array([[ssm_ref(a, 5, 8) * ssm_ref(b, 5, 8) for b in range(256)]
                    for a in range(256)])
    assert np.array_equal(m.model_table(), ref)


def test_trunc_drops_low_columns():
    m = parse_spec("trunc(k=4)@u8")
    a = np.arange(256)[:, None]
    b = np.arange(256)[None, :]
    # independent: sum of a_i b_j 2^(i+j) over i + j >= 4
    ref = np.zeros((256, 256), dtype=np.int64)
    for i in range(8):
        for j in range(8):
            if i + j >= 4:
                ref += ((a >> i) & 1) * ((b >> j) & 1) << (i + j)
    assert np.array_equal(m.model_table(), ref)
    err = m.model_table() - exact_table(m.fmt)
    assert err.max() == 0 and err.min() < 0  # truncation only ever loses value (unsigned)


def test_trunc_compensation_centres_the_error():
    plain = parse_spec("trunc(k=6)@u8").model_table() - exact_table(Format.parse("u8"))
    comp = parse_spec("trunc(k=6,comp=1)@u8").model_table() - exact_table(Format.parse("u8"))
    assert abs(comp.mean()) < abs(plain.mean()) / 10


def test_perf_skips_rows():
    m = parse_spec("perf(i=2,j=3)@u8")
    a = np.arange(256)[:, None]
    b = np.arange(256)[None, :]
    kept_b = b & ~0b11100
    assert np.array_equal(m.model_table(), a * kept_b)


def test_bam_omits_rows_and_columns():
    m = parse_spec("bam(h=2,v=5)@u6")
    a = np.arange(64)[:, None]
    b = np.arange(64)[None, :]
    ref = np.zeros((64, 64), dtype=np.int64)
    for i in range(6):
        for j in range(2, 6):
            if i + j >= 5:
                ref += ((a >> i) & 1) * ((b >> j) & 1) << (i + j)
    assert np.array_equal(m.model_table(), ref)


def test_cfgtrunc_modes_are_truncations():
    m = parse_spec("cfgtrunc(k=0/3/6)@s8")
    assert m.modes == 3
    for mode, k in enumerate((0, 3, 6)):
        assert np.array_equal(m.model_table(mode), parse_spec(f"trunc(k={k})@s8").model_table())
    with pytest.raises(InputError, match="mode 3"):
        m.model_table(3)


def test_product_shape_holds_every_product():
    m = parse_spec("drum(k=2)@s8")  # (-128)^2 -> 192^2 = 36864 needs 17 signed bits
    assert m.p_shape.width == 17 and m.p_shape.signed
    assert parse_spec("exact@s8").p_shape.width == 16
    assert parse_spec("exact@u4x3").p_shape.width == 7


def test_canonical_spec():
    assert parse_spec("trunc( k = 4 , comp=0 )@s8").spec == "trunc(k=4)@s8"
    assert parse_spec("bam(v=6,h=2)@s8x4").spec == "bam(h=2,v=6)@s8x4"
    assert parse_spec("exact()@u4").spec == "exact@u4"
    assert parse_spec("cfgtrunc(k=0/4)@s8").spec == "cfgtrunc(k=0/4)@s8"
    assert parse_spec("exact@s8x8").spec == "exact@s8"


@pytest.mark.parametrize("text, needle", [
    ("foo@s8", "'foo'"),
    ("drum@s8", "needs parameter 'k'"),
    ("drum(k=99)@s8", "k=99"),
    ("drum(k=4,q=1)@s8", "'q'"),
    ("exact@s0", "width 0"),
    ("exact@s17", "width 17"),
    ("exact@u8x9", "width 9"),
    ("exact", "missing format"),
    ("drum(k=4)", "missing format"),
    ("drum(k=4@s8", "unbalanced"),
    ("drum(k=four)@s8", "'four'"),
    ("drum(k)@s8", "'k'"),
    ("exact@x8", "'x8'"),
    ("", "empty"),
    ("trunc(k=2,k=3)@s8", "twice"),
    ("perf(i=6,j=3)@s8", "perf(i=6,j=3)"),
    ("cfgtrunc(k=2/4)@s8", "exact mode"),
    ("drum(k=2/3)@s8", "not a list"),
])
def test_bad_specs_name_the_bad_part(text, needle):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert needle in str(info.value)


def test_every_family_is_listed_with_valid_defaults():
    assert {"exact", "booth", "mul", "trunc", "bam", "perf", "drum", "mitchell", "roba", "kulkarni",
            "ssm", "cfgtrunc"} <= set(FAMILIES)
    for name, cls in FAMILIES.items():
        for p in cls.params:
            lo, hi = p.bounds(Format.parse("s8"))
            assert lo <= hi, (name, p.name)
