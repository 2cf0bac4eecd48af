"""Test session set-up shared by every part.

Each session (each xdist worker) gets fresh, empty directories for the netlist/compile
cache, the user multiplier library and the results store, so a warm cache on the
developer's machine can never make a test pass for the wrong reason, and tests never
write into the working tree.
"""

import os
import tempfile

_root = tempfile.mkdtemp(prefix="axsa-tests-")
os.environ["AXSA_CACHE"] = os.path.join(_root, "cache")
os.environ["AXSA_LIB"] = os.path.join(_root, "lib")
os.environ["AXSA_DB"] = os.path.join(_root, "results.sqlite")
os.environ.setdefault("MPLBACKEND", "Agg")
