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
