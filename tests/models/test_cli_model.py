"""`axsa train`, `axsa eval`, `axsa finetune` end to end, and their bad-input exits."""

import json

import numpy as np
import pytest

from axsa.cli import main


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ts.pt"
    rc = main(["train", "--model", "ts", "--bits", "8", "--epochs", "1", "--qat-epochs", "1",
               "--d-model", "8", "--out", str(path), "--json"])
    assert rc == 0
    return path


def test_eval_json_keys_and_streams(ckpt, capsys, tmp_path):
    rc, out, _ = run(capsys, "eval", "--ckpt", str(ckpt), "--mult", "drum(k=4)@s8",
                     "--record", str(tmp_path / "streams"), "--samples", "2", "--json")
    assert rc == 0
    data = json.loads(out)
    assert {"fp32", "fake_quant", "integer", "approx"} <= set(data)
    assert set(data["integer"]) == {"rmse", "mae"}
    assert data["integer"] == data["fake_quant"]
    f = np.load(tmp_path / "streams" / "layers.0.ffn.fc1.npz")
    g, m, k, n = f["shape"].tolist()
    assert (g, m, k, n) == (2, 24, 8, 64)      # ff defaults to 64
    assert f["a"].shape == f["b"].shape == (g * m * k * n,)


def test_finetune_cli(ckpt, capsys, tmp_path):
    assign = tmp_path / "a.json"
    assign.write_text(json.dumps({"layers.0.ffn.fc1": "trunc(k=6)@s8",
                                  "head": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 2}}))
    out_ck = tmp_path / "ft.pt"
    rc, out, _ = run(capsys, "finetune", "--ckpt", str(ckpt), "--assign", str(assign),
                     "--epochs", "1", "--out", str(out_ck), "--json")
    assert rc == 0, out
    data = json.loads(out)
    assert data["assignment"]["head"].endswith("mode 2")
    assert out_ck.is_file() and "approx" in data["after"]


def test_list_gemms_of_demo_vit(capsys):
    rc, out, _ = run(capsys, "eval", "--model", "vit", "--list-gemms", "--json")
    assert rc == 0
    names = [g["name"] for g in json.loads(out)["gemms"]]
    assert names[0] == "patch" and names[-1] == "head" and "layers.0.attn.qk" in names


@pytest.mark.parametrize("args, needle", [
    (["--mult", "drum(k=99)@s8"], "k=99"),
    (["--mult", "drum(k=4)@u8"], "drum(k=4)@u8"),
    (["--mult", "exact@s4"], "exact@s4"),
])
def test_bad_multiplier_exits_2(ckpt, capsys, args, needle):
    rc, _, err = run(capsys, "eval", "--ckpt", str(ckpt), *args)
    assert rc == 2 and needle in err


def test_bad_assignment_and_files_exit_2(ckpt, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers.0.attn.zz": "exact@s8"}))
    rc, _, err = run(capsys, "eval", "--ckpt", str(ckpt), "--assign", str(bad))
    assert rc == 2 and "layers.0.attn.zz" in err
    bad.write_text("{nope")
    rc, _, err = run(capsys, "eval", "--ckpt", str(ckpt), "--assign", str(bad))
    assert rc == 2 and "bad.json" in err
    rc, _, err = run(capsys, "eval", "--ckpt", str(tmp_path / "missing.pt"))
    assert rc == 2 and "missing.pt" in err
    rc, _, err = run(capsys, "finetune", "--ckpt", str(ckpt), "--out", str(tmp_path / "x.pt"))
    assert rc == 2 and "--assign" in err


def test_csv_training_and_its_errors(capsys, tmp_path):
    t = np.arange(400)
    rng = np.random.default_rng(0)
    rows = ["date,load,temp"] + [
        f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00,{np.sin(i / 12) + 0.1 * rng.normal():.4f},"
        f"{np.cos(i / 30):.4f}" for i in t[:24 * 16]]
    csv = tmp_path / "ett.csv"
    csv.write_text("\n".join(rows))
    rc, out, _ = run(capsys, "train", "--model", "ts", "--csv", str(csv), "--epochs", "1",
                     "--qat-epochs", "1", "--d-model", "8", "--out", str(tmp_path / "c.pt"),
                     "--json")
    assert rc == 0
    assert json.loads(out)["config"]["channels"] == 2
    rc, _, err = run(capsys, "train", "--model", "ts", "--csv", str(csv), "--columns", "load,rain",
                     "--out", str(tmp_path / "d.pt"))
    assert rc == 2 and "'rain'" in err
    rc, _, err = run(capsys, "train", "--model", "ts", "--csv", str(csv), "--date-column",
                     "when", "--out", str(tmp_path / "d.pt"))
    assert rc == 2 and "'when'" in err
    (tmp_path / "text.csv").write_text("date,x\n2020-01-01,a\n2020-01-02,b\n")
    rc, _, err = run(capsys, "train", "--model", "ts", "--csv", str(tmp_path / "text.csv"),
                     "--out", str(tmp_path / "d.pt"))
    assert rc == 2 and "'x'" in err


def _damaged(tmp_path, name, change):
    """The demo ts checkpoint with `change(ck)` applied, saved as `name`."""
    import torch
    from axsa.models.train import demo_checkpoint
    ck = torch.load(demo_checkpoint("ts"), weights_only=True)
    change(ck)
    path = tmp_path / name
    torch.save(ck, path)
    return path


def _first_weight(ck):
    return next(k for k, v in ck["state_dict"].items() if v.dim() == 2)


def _nan(ck, value=float("nan")):
    ck["state_dict"][_first_weight(ck)][0, 0] = value


DAMAGES = {
    "no-kind": (lambda ck: ck.pop("kind"), "has no 'kind' entry"),
    "bad-kind": (lambda ck: ck.update(kind="bert"), "unknown model kind 'bert'"),
    "not-axsa": (lambda ck: ck.pop("format"), "is not an axsa model checkpoint"),
    "extra-entry": (lambda ck: ck.update(weights=1), "unknown entries 'weights'"),
    "config-key": (lambda ck: ck["config"].update(colour=3), "unknown config key(s) 'colour'"),
    "config-value": (lambda ck: ck["config"].update(heads=3),
                     "d_model 32 is not divisible by heads 3"),
    "config-type": (lambda ck: ck["config"].update(d_model="32"), "d_model"),
    "config-huge": (lambda ck: ck["config"].update(layers=10**9),
                    "config layers = 1000000000 does not match"),
    "config-list": (lambda ck: ck.update(config=[1, 2]), "'config' must be an object"),
    "shape": (lambda ck: ck["state_dict"].update({_first_weight(ck): ck["state_dict"][
        _first_weight(ck)][:3]}), "has shape (3, "),
    "missing": (lambda ck: ck["state_dict"].pop(_first_weight(ck)), "state tensors missing"),
    "unexpected": (lambda ck: ck["state_dict"].update(extra=ck["state_dict"]["pe"]),
                   "unexpected state tensors 'extra'"),
    "not-tensor": (lambda ck: ck["state_dict"].update(pe=[1.0]), "'pe' is a list"),
    "nan": (_nan, "holds NaN or inf"),
    "inf": (lambda ck: _nan(ck, float("-inf")), "holds NaN or inf"),
    "bad-data": (lambda ck: ck.update(data={"source": "csv"}), "CSV data source has no path"),
    "bad-meta": (lambda ck: ck.update(meta="x"), "'meta' must be an object"),
    "layers-more": (lambda ck: ck["config"].update(layers=2), "state tensors missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_checkpoints_exit_2_naming_file_and_fault(tmp_path, capsys, damage):
    change, needle = DAMAGES[damage]
    path = _damaged(tmp_path, f"{damage}.pt", change)
    rc, out, err = run(capsys, "eval", "--ckpt", str(path))
    assert rc == 2 and out == ""
    assert f"{damage}.pt" in err and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("content", [b"this is a text file, not a checkpoint\n",
                                     b"", b"\x80\x04K\x01."])   # a pickle of the int 1
def test_foreign_files_exit_2(tmp_path, capsys, content):
    path = tmp_path / "foreign.pt"
    path.write_bytes(content)
    rc, _, err = run(capsys, "eval", "--ckpt", str(path))
    assert rc == 2 and "foreign.pt" in err and "Traceback" not in err
    assert "not a readable torch checkpoint" in err or "not an axsa model checkpoint" in err


def test_truncated_and_unsafe_checkpoints_exit_2(tmp_path, capsys, ckpt):
    import pathlib

    import torch
    data = ckpt.read_bytes()
    for cut in (len(data) // 2, 100, len(data) - 30):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        for cmd in (["eval"], ["finetune", "--mult", "exact@s8", "--out",
                               str(tmp_path / "o.pt")]):
            rc, _, err = run(capsys, *cmd, "--ckpt", str(path))
            assert rc == 2 and f"cut{cut}.pt" in err and "Traceback" not in err, err
            assert "not a readable torch checkpoint" in err
    # weights_only refuses pickled objects other than tensors and plain containers
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "axsa-model-1", "path": pathlib.PurePosixPath("/x")}, unsafe)
    rc, _, err = run(capsys, "eval", "--ckpt", str(unsafe))
    assert rc == 2 and "unsafe.pt" in err and "not a readable torch checkpoint" in err
    assert not (tmp_path / "o.pt").exists()


def test_damaged_checkpoint_in_finetune(tmp_path, capsys):
    path = _damaged(tmp_path, "nan.pt", _nan)
    rc, _, err = run(capsys, "finetune", "--ckpt", str(path), "--mult", "exact@s8",
                     "--out", str(tmp_path / "o.pt"))
    assert rc == 2 and "nan.pt" in err and "holds NaN or inf" in err
    assert "Traceback" not in err and not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--lr", "nan"], "lr must be a positive finite number, got nan"),
    (["--lr", "inf"], "got inf"),
    (["--lr", "-1e-3"], "got -0.001"),
    (["--lr", "0"], "got 0.0"),
    (["--lr", "fast"], "'fast' is not a valid float"),
    (["--epochs", "0"], "0 is not in the range x>=1"),
    (["--seed", str(2**70)], f"got {2**70}"),
    (["--seed", "-1"], "got -1"),
])
def test_finetune_bad_numbers_exit_2(ckpt, tmp_path, capsys, args, needle):
    rc, _, err = run(capsys, "finetune", "--ckpt", str(ckpt), "--mult", "exact@s8",
                     "--out", str(tmp_path / "o.pt"), *args)
    assert rc == 2 and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("args, needle", [
    (["--seed", str(2**64)], f"got {2**64}"),
    (["--layers", "100000"], "layers must be an integer in 1..64, got 100000"),
    (["--window", str(10**9)], "window must be an integer in 1..4096"),
    (["--d-model", "2048"], "beyond exact"),
    (["--epochs", "-1"], "-1 is not in the range x>=0"),
])
def test_train_bad_numbers_exit_2(tmp_path, capsys, args, needle):
    rc, _, err = run(capsys, "train", "--model", "ts", "--out", str(tmp_path / "t.pt"), *args)
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--samples", "0"], "0 is not in the range x>=1"),
    (["--samples", "-5"], "-5"),
])
def test_eval_bad_numbers_exit_2(capsys, args, needle):
    rc, _, err = run(capsys, "eval", "--model", "ts", *args)
    assert rc == 2 and needle in err and "Traceback" not in err, err
