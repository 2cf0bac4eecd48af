"""`CheckedComponent`: a `wiring.Component` whose arguments are checked before it exists.

Amaranth warns about an elaboratable that is created and never elaborated. A component
whose constructor rejects its arguments would leave exactly such an object behind, so
the components of `axsa.rtl` check their arguments in a static `check` method, which
runs on the constructor's arguments (bound to ``__init__``'s signature, defaults filled
in) before the object is created. A rejected construction then raises and leaves
nothing behind; ``__init__`` only stores what `check` accepted.
"""

from __future__ import annotations

import inspect

from amaranth.lib import wiring

__all__ = ["CheckedComponent", "check_acc_width"]


def check_acc_width(acc_width) -> None:
    """An accumulator width is an integer 2..64 (ValueError naming it otherwise)."""
    if isinstance(acc_width, bool) or not isinstance(acc_width, int) \
            or not 2 <= acc_width <= 64:
        raise ValueError(f"acc_width must be an integer 2..64, not {acc_width!r}")


class CheckedComponent(wiring.Component):
    """Base of components with a `check` of their constructor arguments (module docstring).

    Subclasses define ``check(**arguments)``, a static method taking the parameters of
    their ``__init__`` by name and raising `ValueError` (or `TypeError`) naming a bad one.
    """

    @staticmethod
    def check(**arguments) -> None:
        """Raise if the constructor arguments are illegal; the default accepts all."""

    def __new__(cls, *args, **kwargs):
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments[next(iter(arguments))]  # `self`
        cls.check(**arguments)
        # src_loc_at=1: Amaranth's "created but never used" points at the caller
        return super().__new__(cls, src_loc_at=1)
