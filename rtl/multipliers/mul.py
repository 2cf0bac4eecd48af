"""`mul`: exact multiplier written as the `*` operator; synthesis picks the circuit.

On gates Yosys builds it (its own Booth or array mapping); on FPGAs with ``--dsp`` it is
the family that maps to a DSP block (SB_MAC16 on iCE40 UP5K, MULT18X18D on ECP5), which
the explicit architectures `exact` and `booth` never do. The reference for "what does the
vendor-style multiplier cost".
"""

from __future__ import annotations

import numpy as np

from .base import Multiplier


class Mul(Multiplier):
    family = "mul"
    doc = "exact, the '*' operator: the synthesis tool picks the circuit (DSPs on FPGAs)"

    def model(self, a, b, mode=0):
        return np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)

    def rtl(self, m, a, b, mode):
        return a * b
