"""`axsa search --torch-model`: the search on a user's own PyTorch model (a small CNN the
test trains on digits and ships as a factory file), with a real SQLite store, the real
cost model and a real two-process pool; its front checked against `axsa eval
--torch-model --assign` and `axsa synth --stream` of the same assignments and streams."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from axsa.cli import main

CALIB = 256
AGGRESSIVE = "drum(k=2)@s8"
CANDS = f"trunc(k=8)@s8,{AGGRESSIVE}"
GEMMS = ["0", "3"]
#: MACs per sample of the two GEMMs: 3x3 conv 1->4 over 8x8 pixels, Linear 256->10
MACS = [64 * 9 * 4, 256 * 10]

FACTORY = '''
import torch
from torch import nn

def factory():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 64, 10))
    net.load_state_dict(torch.load({weights!r}, weights_only=True))
    return net

def boom():
    raise RuntimeError("the factory is broken")
'''


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 10))


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A factory file loading weights trained here (the same model in every process),
    the data file (CALIB training samples, then digits' validation and test samples),
    and the two files `axsa eval` measures the search's splits on: the calibration
    samples followed by the even (validation) or odd (test) samples after them."""
    from axsa.examples.digits_cnn import digits
    d = tmp_path_factory.mktemp("byom-search")
    data = digits()
    torch.manual_seed(0)
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data["train"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), d / "weights.pt")
    (d / "user_cnn.py").write_text(FACTORY.format(weights=str(d / "weights.pt")))
    xs = torch.cat([x[:CALIB], data["val"][0], data["test"][0]]).numpy()
    ys = torch.cat([y[:CALIB], data["val"][1], data["test"][1]]).numpy()
    np.savez(d / "data.npz", x=xs, y=ys)
    for name, rest in (("val", slice(CALIB, None, 2)), ("test", slice(CALIB + 1, None, 2))):
        np.savez(d / f"{name}.npz", x=np.concatenate([xs[:CALIB], xs[rest]]),
                 y=np.concatenate([ys[:CALIB], ys[rest]]))
    np.savez(d / "no_y.npz", x=xs)
    return d


def spec(d) -> str:
    return f"{d / 'user_cnn.py'}:factory"


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def search_args(d, db, out, budget, *extra):
    return ["search", "--torch-model", spec(d), "--data", d / "data.npz", "--calib",
            CALIB, "--candidates", CANDS, "--budget", budget, "--db", db, "--out", out,
            "--json", *extra]


@pytest.fixture(scope="module")
def warm(user_model, tmp_path_factory):
    """One search of budget 6 into a store; its costs and evaluations are reused."""
    out = tmp_path_factory.mktemp("warm")
    rc = main([str(a) for a in search_args(user_model, out / "r.sqlite", out / "out", 6)])
    assert rc == 0
    return out, json.loads((out / "out" / "front.json").read_text())


def copy_store(src, dst) -> None:
    """Copy a results store with SQLite's backup API (which reads through the WAL of a
    connection this process still holds open)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def eval_json(capsys, d, split: str, *args) -> dict:
    rc, out, err = run(capsys, "eval", "--torch-model", spec(d), "--data",
                       d / f"{split}.npz", "--calib", CALIB, "--json", *args)
    assert rc == 0, err
    return json.loads(out)


def test_the_front_is_what_eval_measures(warm, user_model, capsys, tmp_path):
    out, data = warm
    assert data["model"] == data["torch_model"] == spec(user_model)
    assert data["calib"] == CALIB and data["bits"] == 8 and data["metric"] == "top1"
    assert data["evaluations"] == 6 and len(data["pareto"]) >= 2
    assert set(data["pareto"][0]["assignment"]) == set(GEMMS)
    # the all-exact reference on the validation split is eval's integer top-1 on it
    assert eval_json(capsys, user_model, "val")["integer"]["top1"] == data["reference"]["val"]
    for i, p in enumerate(data["pareto"]):
        assign = tmp_path / f"a{i}.json"
        assign.write_text(json.dumps(p["assignment"]))
        for split in ("val", "test"):
            got = eval_json(capsys, user_model, split, "--assign", assign)
            assert got["approx"]["top1"] == p["metric"][split]["top1"], (split, p)
    # the chosen assignment file goes straight back into `axsa eval --assign`
    chosen = data["chosen"]
    assert chosen is not None and chosen["delta"] <= 0.02
    got = eval_json(capsys, user_model, "test", "--assign", out / "out" / "assignment.json")
    assert set(got["assignment"]) == set(GEMMS)
    assert got["approx"]["top1"] == chosen["metric"]["test"]["top1"]


def test_a_restarted_search_is_answered_from_the_store(warm, user_model, tmp_path):
    out, data = warm
    db = tmp_path / "r.sqlite"
    copy_store(out / "r.sqlite", db)
    # a new process: the model rebuilt from the factory and the data has the same identity
    again = subprocess.run([sys.executable, "-m", "axsa.cli",
                            *map(str, search_args(user_model, db, tmp_path / "out", 6))],
                           capture_output=True, text=True, env=os.environ)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["computed"] == 0
    assert second["pareto"] == data["pareto"] and second["hypervolume"] == data["hypervolume"]


def test_two_workers_give_the_serial_search(warm, user_model, tmp_path):
    out, _ = warm
    runs = []
    for name, extra in (("par", ["-j", "2"]), ("serial", [])):
        db = tmp_path / f"{name}.sqlite"
        copy_store(out / "r.sqlite", db)
        assert main([str(a) for a in search_args(user_model, db, tmp_path / name, 8,
                                                   *extra)]) == 0
        runs.append(json.loads((tmp_path / name / "front.json").read_text()))
    assert runs[0]["computed"] == runs[1]["computed"] > 0
    assert runs[0]["pareto"] == runs[1]["pareto"]
    # the workers loaded the parent's calibrated state
    assert len(list((tmp_path / "par").glob("model-*.pt"))) == 1
    assert not list((tmp_path / "serial").glob("model-*.pt"))


def test_energy_ratios_come_from_the_models_own_streams(warm, user_model, capsys,
                                                        tmp_path):
    from axsa.search.job import parse_candidates
    from axsa.search.model_eval import ModelEvaluator
    from axsa.search.parallel import ModelSource

    from axsa.store import Store
    out, _ = warm
    db = tmp_path / "r.sqlite"
    copy_store(out / "r.sqlite", db)
    source = ModelSource.byom(spec(user_model), str(user_model / "data.npz"), CALIB)
    ev = ModelEvaluator(source, parse_candidates(CANDS, 8), Store(db))
    assert list(ev.space.gemms) == GEMMS
    assert ev._macs.tolist() == MACS
    exact = ev.space.all_exact
    assert ev.energy_ratio(exact) == 1.0 and ev.pe_energy_ratio(exact) == 1.0
    labels = [c.label for c in ev.space.candidates[0]]
    agg = tuple(labels.index(AGGRESSIVE) for _ in GEMMS)
    # the same ratio from the streams `axsa eval --record` writes (the first 2 validation
    # samples) and `axsa synth --stream` energies computed afresh
    eval_json(capsys, user_model, "val", "--record", tmp_path / "streams", "--samples", 2)
    energy = {}
    for g in GEMMS:
        for s in ("exact@s8", AGGRESSIVE):
            rc, o, err = run(capsys, "synth", s, "--unit", "mult", "--no-fmax", "--no-store",
                             "--stream", tmp_path / "streams" / f"{g}.npz", "--json")
            assert rc == 0, err
            energy[g, s] = json.loads(o)["energy"]
    want = (sum(m * energy[g, AGGRESSIVE] for g, m in zip(GEMMS, MACS))
            / sum(m * energy[g, "exact@s8"] for g, m in zip(GEMMS, MACS)))
    assert ev.energy_ratio(agg) == pytest.approx(want, rel=1e-12)
    assert want < 1


@pytest.mark.parametrize("model, data, extra, match", [
    ("no_such_module_xyz:factory", "data.npz", [], "cannot import module 'no_such_module_xyz'"),
    ("{dir}/user_cnn.py:boom", "data.npz", [], "raised RuntimeError: the factory is"),
    ("{dir}/user_cnn.py:factory", "no_y.npz", [], "has no array 'y'"),
    ("{dir}/user_cnn.py:factory", "data.npz", ["--calib", "795"], "leaves 1 sample"),
    ("{dir}/user_cnn.py:factory", "data.npz", ["--model", "ts"], "takes no --model"),
])
def test_bad_torch_model_input_exits_2(capsys, user_model, tmp_path, model, data, extra,
                                       match):
    import re
    rc, out, err = run(capsys, "search", "--torch-model", model.format(dir=user_model),
                       "--data", user_model / data, "--db", tmp_path / "r.sqlite",
                       "--out", tmp_path / "out", *extra)
    assert rc == 2
    assert re.search(match, err), err
    assert "Traceback" not in err


def test_torch_model_options_need_torch_model(capsys, tmp_path):
    rc, _, err = run(capsys, "search", "--model", "ts", "--data", "x.npz", "--db",
                     tmp_path / "r.sqlite")
    assert rc == 2 and "--data need(s) --torch-model" in err


def test_eval_assign_naming_an_unknown_gemm_exits_2(capsys, user_model, tmp_path):
    assign = tmp_path / "a.json"
    assign.write_text(json.dumps({"0": AGGRESSIVE, "nope": AGGRESSIVE}))
    rc, _, err = run(capsys, "eval", "--torch-model", spec(user_model), "--data",
                     user_model / "data.npz", "--calib", CALIB, "--assign", assign)
    assert rc == 2 and "'nope'" in err and "Traceback" not in err


def test_finetune_top_writes_a_checkpoint_eval_agrees_with(warm, user_model, capsys,
                                                           tmp_path):
    out, _ = warm
    db = tmp_path / "r.sqlite"
    copy_store(out / "r.sqlite", db)
    rc, out_text, err = run(capsys, *search_args(user_model, db, tmp_path / "out", 6,
                                                 "--finetune-top", 1))
    assert rc == 0, err
    data = json.loads(out_text)
    assert data["computed"] == 0
    tuned = [p for p in data["pareto"] if "finetuned" in p]
    assert len(tuned) == 1
    ft = tuned[0]["finetuned"]
    assign = tmp_path / "a.json"
    assign.write_text(json.dumps(tuned[0]["assignment"]))
    # `axsa eval --torch-model --ckpt` of the fine-tuned state measures what the search
    # reported for it, on either split
    for split in ("val", "test"):
        got = eval_json(capsys, user_model, split, "--ckpt", ft["checkpoint"], "--assign",
                        assign)
        assert got["approx"]["top1"] == ft[split]["top1"], split


def test_the_store_identity_follows_the_data_and_the_code(user_model, tmp_path):
    from axsa.search.parallel import ModelSource, load_model

    def identity(factory_text=None, data="data.npz", calib=CALIB):
        path = user_model / "user_cnn.py"
        if factory_text is not None:
            path = tmp_path / f"f{len(list(tmp_path.iterdir()))}.py"
            path.write_text(factory_text)
        source = ModelSource.byom(f"{path}:factory", str(user_model / data), calib)
        return source.identity(*load_model(source))

    base = identity()
    text = (user_model / "user_cnn.py").read_text()
    assert identity(text) == base                  # the same code elsewhere: the same model
    assert identity(text + "\n# edited\n") != base  # the same weights, other code
    d = np.load(user_model / "data.npz")
    np.savez(tmp_path / "short.npz", x=d["x"][:-1], y=d["y"][:-1])
    assert identity(data=tmp_path / "short.npz") != base   # one test sample fewer
    assert identity(calib=CALIB + 2) != base
