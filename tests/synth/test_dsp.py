"""The `mul` family (exact, the `*` operator) is the one that FPGA flows map to DSP blocks;
the explicit architectures stay in LUTs even with --dsp."""

import json
import subprocess
import sys


def synth(*args):
    r = subprocess.run([sys.executable, "-m", "axsa.cli", "synth", *args, "--json",
                        "--no-store", "--no-fmax"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_mul_maps_to_one_ice40_dsp_and_exact_does_not():
    dsp = synth("mul@s8", "--target", "ice40", "--dsp")
    assert dsp["dsps"] == 1 and dsp["luts"] == 0
    luts = synth("mul@s8", "--target", "ice40")
    assert luts["dsps"] == 0 and luts["luts"] > 100
    array = synth("exact@s8", "--target", "ice40", "--dsp")
    assert array["dsps"] == 0 and array["luts"] > 100
