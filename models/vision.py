"""timm's model definitions beside a CPU torch (the `vision` extra).

Every timm release imports torchvision at ``import timm`` (for ``FrozenBatchNorm2d`` and
its transforms). The torchvision release made for the pinned torch 2.13.0 is 0.28.0, and
its PyPI wheel is a CUDA build: its C extension (``torchvision/_C.so``: the detection
operators nms, roi_align, ... and nothing a classification model calls) links
``libtorch_cuda.so``, which a CPU torch does not have. torchvision's own import then fails
at one line, the fake-tensor registration of ``torchvision::nms`` / ``qnms``, which it
makes even when its extension did not load.

`import_timm` loads torchvision's extension the way torchvision does
(``torch.ops.load_library``); only if that fails does it declare the schemas of the two
operators that registration needs (public ``torch.library`` API, no kernel behind them),
so that torchvision's pure-Python part (transforms, ``FrozenBatchNorm2d``) and every timm
model import unchanged. Calling ``torchvision.ops.nms`` then raises torch's "no kernel"
error, as torchvision itself does without its extension. Where a CPU torchvision wheel is
installed (its extension loads), nothing is declared.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from axsa.errors import InputError

#: the operators torchvision 0.28 registers fake kernels for even without its extension
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library holding the declarations (kept alive)


def _extension_path() -> Path | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd"))
        if found:
            return found[0]
    return None


def _declare_missing_operators() -> None:
    """Declare `_SCHEMAS` if torchvision's extension cannot load (see the module doc)."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return
    import torch

    path = _extension_path()
    if path is None:
        return  # no torchvision: timm's import says so itself
    try:
        torch.ops.load_library(str(path))
        return
    except OSError:
        pass
    _library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            _library.define(schema)


def import_timm():
    """``import timm``, beside a CPU torch; an `InputError` naming the fix if it is absent."""
    _declare_missing_operators()
    try:
        import timm
    except ImportError as exc:
        raise InputError(f"timm cannot be imported ({exc}): install the vision extra, "
                         "`pip install -c scripts/requirements-pinned.txt -r "
                         "scripts/requirements-vision.txt` (scripts/setup does)") from None
    return timm
