"""`axsa build`: real bitstreams through Amaranth's platform build and the YoWASP tools.

One small build per board (a 2x2 array of 4-bit exact MACs in the board top) is shared
by the module; its figures are checked against what the tools wrote themselves
(nextpnr's report, the bitstream's header), not against axsa's own reading of them.
"""

import json
import subprocess
import sys

import pytest
from axsa.rtl.boards.platforms import BOARDS

#: the bitstream header each packer writes: iCE40 preamble 7EAA997E; ECP5 preamble
#: BDB3 after its 0xFF padding
PREAMBLE = {"ice40": bytes.fromhex("7eaa997e"), "ecp5": bytes.fromhex("ffffbdb3")}
#: an uncompressed iCE40UP5K bitstream is always this long (icepack, the whole device)
UP5K_BIN_BYTES = 104090
KEYS = {"board", "bitstream", "fmax_mhz", "clock_mhz", "utilization", "macs_per_cycle", "log"}


def axsa(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module", params=sorted(BOARDS))
def small(request, tmp_path_factory):
    """(board name, build folder, process, JSON) of a 2x2 exact@s4 build."""
    out = tmp_path_factory.mktemp(request.param)
    proc = axsa("build", "--board", request.param, "--rows", 2, "--cols", 2,
                "--mult", "exact", "--bits", 4, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return request.param, out, proc, json.loads(proc.stdout)


def test_json_keys_and_configuration(small):
    name, out, _, d = small
    assert KEYS <= set(d)
    assert d["board"] == name
    assert d["macs_per_cycle"] == 4
    assert d["mult"] == "exact@s4"
    assert d["clock_mhz"] == {"icebreaker": 12.0, "ulx3s-85f": 25.0}[name]
    assert d["macs_per_second"] == 4 * d["clock_mhz"] * 1e6


def test_bitstream_written(small):
    name, out, _, d = small
    family = BOARDS[name].family
    data = open(d["bitstream"], "rb").read()
    assert d["bitstream"].startswith(str(out))
    assert PREAMBLE[family] in data[:64]
    if family == "ice40":
        assert len(data) == UP5K_BIN_BYTES


def test_fmax_is_nextpnrs_and_above_the_clock(small):
    _, out, _, d = small
    report = json.loads((out / "report.json").read_text())
    clocks = {k: v for k, v in report["fmax"].items() if not k.startswith("$PACKER")}
    assert min(v["achieved"] for v in clocks.values()) == pytest.approx(d["fmax_mhz"],
                                                                        abs=0.01)
    # the board clock reached nextpnr as the constraint of the design's clock
    assert all(v["constraint"] == pytest.approx(d["clock_mhz"], rel=1e-3)
               for v in clocks.values())
    assert d["fmax_mhz"] > d["clock_mhz"]


def test_utilization_against_nextpnrs_device(small):
    name, out, _, d = small
    u = d["utilization"]
    pnr = json.loads((out / "report.json").read_text())["utilization"]
    if BOARDS[name].family == "ice40":
        assert u["DSP"]["available"] == pnr["ICESTORM_DSP"]["available"] == 8
        assert u["BRAM"]["available"] == pnr["ICESTORM_RAM"]["available"] == 30
        assert u["LUT"]["available"] == pnr["ICESTORM_LC"]["available"] == 5280
        # a logic cell holds one LUT and one flip-flop
        assert max(u["LUT"]["used"], u["FF"]["used"]) <= pnr["ICESTORM_LC"]["used"]
        assert u["DSP"]["used"] == pnr["ICESTORM_DSP"]["used"]
        assert u["BRAM"]["used"] == pnr["ICESTORM_RAM"]["used"]
    else:
        assert u["DSP"]["available"] == pnr["MULT18X18D"]["available"] == 156
        assert u["BRAM"]["available"] == pnr["DP16KD"]["available"] == 208
        assert u["LUT"]["available"] == pnr["TRELLIS_COMB"]["available"] == 83640
        assert u["DSP"]["used"] == pnr["MULT18X18D"]["used"]
        assert u["BRAM"]["used"] == pnr["DP16KD"]["used"]
    assert 0 < u["LUT"]["used"] <= u["LUT"]["available"]


def test_log_and_progress(small):
    _, _, proc, d = small
    log = open(d["log"]).read()
    assert "nextpnr" in log and "yosys" in log
    for step in ("synthesis", "place and route", "bitstream"):
        assert step in proc.stderr


def test_too_big_for_the_up5k_exits_1_naming_the_resource(tmp_path):
    # the quickest honest overflow: the 2x2 board top with its requantizer's 32-bit
    # multiplications in LUTs instead of SB_MAC16s needs about 6100 LUTs of 5280
    # (measured); found after synthesis, before place and route
    proc = axsa("build", "--board", "icebreaker", "--rows", 2, "--cols", 2, "--mult",
                "exact@s4", "--no-dsp", "--out", tmp_path, "--json")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "does not fit" in proc.stderr and "LUT" in proc.stderr and "of 5280" in proc.stderr
    assert "place and route" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "top.bin").exists()


@pytest.mark.parametrize("args, named", [
    (["--rows", "0"], "0"),
    (["--cols", "300"], "300"),
    (["--mult", "nosuch(k=1)"], "nosuch"),
    (["--mult", "trunc(k=99)"], "99"),
    (["--mult", "exact@s8", "--bits", "4"], "--bits"),
    (["--bits", "12"], "12"),
])
def test_bad_arguments_exit_2(tmp_path, args, named):
    proc = axsa("build", "--board", "icebreaker", *args, "--out", tmp_path)
    assert proc.returncode == 2
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # rejected before anything was built


def test_unknown_board_exits_2():
    proc = axsa("build", "--board", "nosuch")
    assert proc.returncode == 2 and "nosuch" in proc.stderr


def test_placer_overflow_is_named():
    # nextpnr-ice40's words for a 4x2 exact@s8 board top (5607 logic cells of 5280)
    from axsa.synth.board import pnr_overflow
    log = "Info: ...\nERROR: Failed to expand region (0, 0) |_> (25, 31) of 5607 ICESTORM_LCs\n"
    assert pnr_overflow(log) == "logic cells (LUT+FF) (5607 ICESTORM_LC cells needed)"
    assert pnr_overflow("ERROR: Unable to place cell 'x', no BELs remaining to implement "
                        "cell type 'ICESTORM_DSP'") == "DSP (ICESTORM_DSP)"
    assert pnr_overflow("Info: routing complete") is None
    # nextpnr-ecp5's words for a 16x16 exact@s8 board top on the ECP5-85F
    log = ("Info: Logic utilisation before packing:\n"
           "Info:     Total LUT4s:     84806/83640   101%\n"
           "Info:        TRELLIS_FF:   24990/  83640    29%\n"
           "ERROR: Unable to find legal placement for all cells, design is probably at "
           "utilisation limit.\n")
    assert pnr_overflow(log) == "LUT (LUT4s 84806 of 83640)"


def test_ecp5_logic_cells_count_carries_twice():
    # the 16x16 exact@s8 board top's synthesized cells (measured): LUTs and carries fit
    # apart (67484 + 1140 of 83640 LUTs, 7806 of 41820 CCU2C), not together
    from axsa.synth.board import FitError, check_fit, logic_cells, utilization
    cells = {"LUT4": 67484, "CCU2C": 7806, "TRELLIS_DPR16X4": 285, "TRELLIS_FF": 24990,
             "MULT18X18D": 64, "DP16KD": 12, "PFUMX": 8284}
    assert logic_cells("ecp5", cells) == 67484 + 2 * 7806 + 4 * 285
    usage = utilization("ecp5", cells, BOARDS["ulx3s-85f"].resources)
    assert usage["LUT"]["used"] == 67484 + 4 * 285 and usage["carry"]["used"] == 7806
    with pytest.raises(FitError, match="logic cells .* 84236 of 83640"):
        check_fit(usage, "ECP5", logic_cells("ecp5", cells), 83640)


@pytest.mark.parametrize("name, device, clock_hz", [
    ("icebreaker", "iCE40UP5K", 12e6), ("ulx3s-85f", "LFE5U-85F", 25e6)])
def test_board_table_matches_amaranth_boards(name, device, clock_hz):
    b = BOARDS[name]
    platform = b.platform_class()()
    assert platform.device == device
    assert platform.default_clk_frequency == b.clock_hz == clock_hz
    assert b.family == {"iCE40UP5K": "ice40", "LFE5U-85F": "ecp5"}[device]
