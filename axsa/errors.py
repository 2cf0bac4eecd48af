"""Error kinds every part of axsa raises, mapped to CLI exit codes.

`InputError` (exit 2) is the user's fault and its message names the bad value;
`ToolError` (exit 1) is a failure of an external tool or of axsa itself, and its
subclass `StateError` (exit 1) names a damaged file of axsa's own state and its fix.
"""


class InputError(ValueError):
    """Bad input: a spec, a file, an option value. The message names the bad part."""


class ToolError(RuntimeError):
    """An external tool (Yosys, nextpnr, g++) or an internal step failed."""


class SpecError(InputError):
    """A malformed or invalid multiplier spec string or operand format."""


class StateError(ToolError):
    """State axsa keeps on disk (a user-library entry, a cache) is damaged: exit 1. The
    message names the file, what is wrong with it and how to repair it."""
