"""`axsa.models.assignment`: assignments checked against a model, tables per GEMM."""

import json

import numpy as np
import pytest
from axsa.models import assignment as A
from axsa.models.train import build_model
from axsa.rtl.multipliers import parse_spec

from axsa.errors import InputError


@pytest.fixture(scope="module")
def model():
    return build_model("ts", bits=8, d_model=8, ff=16)


def test_uniform_assignment_gives_every_gemm_one_table(model):
    got = A.resolve_assignment(model, A.uniform_assignment(model, "drum(k=4)@s8"), "--mult")
    names = model.gemm_names()
    assert set(got.tables) == set(got.specs) == set(names) and len(names) > 3
    assert set(got.specs.values()) == {"drum(k=4)@s8"}
    want = parse_spec("drum(k=4)@s8").model_table()
    assert all(np.array_equal(t.table, want) for t in got.tables.values())
    assert len({id(t) for t in got.tables.values()}) == 1      # built once, shared


def test_entries_with_modes_and_unnamed_gemms(model, tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"layers.0.ffn.fc1": "trunc(k=6)@s8",
                                "head": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 2},
                                "layers.0.attn.qk": {"spec": "exact@s8"}}))
    got = A.resolve_assignment(model, A.read_assignment(path), str(path))
    assert got.specs == {"layers.0.ffn.fc1": "trunc(k=6)@s8",
                         "head": "cfgtrunc@s8 mode 2",   # the canonical spec
                         "layers.0.attn.qk": "exact@s8"}
    cfg = parse_spec("cfgtrunc(k=0/2/4/6)@s8")
    np.testing.assert_array_equal(got.tables["head"].table, cfg.model_table(2))
    assert not np.array_equal(cfg.model_table(2), cfg.model_table(0))
    assert "layers.0.attn.q" not in got.tables           # unnamed: exact
    # parsed multipliers are taken as they are (the search holds them)
    obj = A.resolve_assignment(model, {"head": parse_spec("trunc(k=6)@s8")})
    assert obj.specs == {"head": "trunc(k=6)@s8"}


@pytest.mark.parametrize("entries, needles", [
    ({"layers.0.attn.zz": "exact@s8"}, ["src.json", "'layers.0.attn.zz'", "layers.0.attn.q"]),
    ({"head": "drum(k=4)@u8"}, ["src.json: GEMM 'head'", "'drum(k=4)@u8'", "signed 8-bit"]),
    ({"head": "exact@s4"}, ["GEMM 'head'", "'exact@s4'", "at least 8 bits"]),
    ({"head": "exact@s8x4"}, ["GEMM 'head'", "'exact@s8x4'"]),
    ({"head": "drum(k=99)@s8"}, ["GEMM 'head'", "k=99"]),
    ({"head": "nosuch@s8"}, ["GEMM 'head'", "nosuch"]),
    ({"head": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 4}},
     ["GEMM 'head'", "mode 4 out of range", "4 mode(s): 0..3"]),
    ({"head": {"spec": "trunc(k=6)@s8", "mode": 1}}, ["GEMM 'head'", "mode 1 out of range"]),
    ({"head": {"spec": "exact@s8", "mode": "2"}}, ["GEMM 'head'", "mode '2' is not an integer"]),
    ({"head": {"spec": "exact@s8", "mode": True}}, ["GEMM 'head'", "mode True"]),
    ({"head": {"spec": "exact@s8", "mod": 1}}, ["GEMM 'head'", "unknown key(s) 'mod'"]),
    ({"head": {"mode": 1}}, ["GEMM 'head'", "has no 'spec'"]),
    ({"head": 5}, ["GEMM 'head' needs a spec string, got 5"]),
    ({"head": ["exact@s8"]}, ["GEMM 'head' needs a spec string"]),
    (["exact@s8"], ["src.json must be an object", "list"]),
])
def test_bad_entries_name_the_gemm_and_what_is_wrong(model, entries, needles):
    with pytest.raises(InputError) as info:
        A.resolve_assignment(model, entries, "src.json")
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize("content, needle", [
    (b"{nope", "is not valid JSON"),
    (b"[\"exact@s8\"]", "must hold a JSON object {gemm name: spec}, not list"),
    (b"\"exact@s8\"", "not str"),
    (b"{\"head\": \"\xe9xact@s8\"}", "is not valid JSON"),          # not UTF-8
    (b"", "is not valid JSON"),
])
def test_bad_assignment_files_name_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.json") as info:
        A.read_assignment(path)
    assert needle in str(info.value)


def test_missing_assignment_file_and_folder(tmp_path):
    with pytest.raises(InputError, match=r"'.*missing\.json' does not exist"):
        A.read_assignment(tmp_path / "missing.json")
    with pytest.raises(InputError, match="does not exist"):   # a folder is not a file
        A.read_assignment(tmp_path)
