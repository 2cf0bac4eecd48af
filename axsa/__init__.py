"""axsa: approximate systolic arrays, from Amaranth RTL to bitstream.

The import package `axsa` holds the shared services (errors, toolchain set-up, results
store, CLI); the root folders rtl/, models/, sim/, synth/ and search/ install as
`axsa.rtl`, `axsa.models`, ... Importing `axsa` itself is cheap: no torch, no Amaranth.
"""

__version__ = "0.1.0"
