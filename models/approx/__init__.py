"""Bit-exact approximate-multiplier GEMM for PyTorch, at near exact-GEMM speed.

An approximate GEMM replaces every product of an integer GEMM by a product-table lookup:

    C[m, n] = sum_k lut[code(A[m, k]), code(B[k, n])]

with codes as in ../shared/DESIGN.md (the operand's bit pattern read unsigned). A plain
gather does M*K*N lookups; the engines below, all exact, avoid it where it matters:

``native`` / ``native-gather``
    One C++ call (`models/approx_kernels.cc` through `axsa.models._native`) for the
    whole GEMM, reading the operands in place (any dtype, any strides): value check,
    codes, then the low-rank plan below as one int8 GEMM on AVX512-VNNI (portable loops
    elsewhere), or the plain gather. Compiled on first use and cached; without a C++
    compiler the torch engines below do all the work.
``lowrank``
    Most approximate multipliers have a product table of small exact rank (truncation,
    broken arrays, DRUM, ROBA, Kulkarni, SSM, Mitchell with truncation: rank <= 32 at
    8 bits, <= 9 for most). The table is factored once with integers
    (`axsa.models._lowrank`), every factor centred and split into int8 parts, and the
    GEMM becomes one int8 x int8 -> int32 GEMM (``torch._int_mm``, exact) on
    element-wise mapped operands, plus per-code row and column sums. Operands batched on
    both sides (attention) use either a loop of those, or one batched float GEMM over
    the integer terms whose every partial sum is an integer below 2^24 (float32) or
    2^53 (float64), hence exact.
``bag``
    Tables without low-rank structure: one operand's rows of the table are gathered into
    a per-k embedding matrix and ``torch.nn.functional.embedding_bag`` sums them per
    output column; float32 partial sums are kept below 2^24 by blocking K, so exact.
``gather``
    The plain gather, ``lut[a_code, b_code]`` for every (m, k, n), blocked: the
    reference, and the cheapest for tiny GEMMs.

``engine="auto"`` takes the engine stored for the call's class (thread count, the
table's rank class, the operands' shape class: `choices`), fitted once per machine: the
first call of a class times the engines the cost model (`costs.estimate`) finds plausible
on its operands (all exact) and stores the fastest (`tuner.fit`), so that the same call
picks the same engine in every process; ``AXSA_RETUNE=1`` or `retune()` refits. Besides
the engines above it may pick ``terms``: the low-rank engine's batched float GEMM over
the integer terms, for any batch shape. Once a native engine is chosen, later calls with
the same operand layout go straight to a prepared kernel call (`cache.FAST`). The native
kernels run on ``torch.get_num_threads()`` threads. See docs/emulation.md.

The package, one idea per module:

``table``     `ProductTable`: the table, checked once
``plan``      `Plan`: what the engines precompute per table (a frozen dataclass)
``operands``  operand values -> codes, shapes and batch layouts
``lowrank``, ``bag``, ``gather``, ``native``   the engines
``costs``     the cost model; ``tuner``: the engine choice of ``auto``; ``choices``: the
              stored choices
``matmul``    `approx_matmul`, the entry; ``autograd``: `ApproxMatmul`, `approx_matmul_grad`
``cache``     every cache (plans, engine choices, prepared kernel calls, scratch tensors)
"""

from . import cache, choices
from .autograd import ApproxMatmul, Grad, approx_matmul_grad
from .bag import BAG_BLOCK_ELEMENTS
from .cache import MAX_PLANS, MAX_TUNED
from .choices import retune
from .costs import estimate
from .gather import GATHER_BLOCK_ELEMENTS
from .lowrank import BLOCK_ELEMENTS, PART_ELEMENTS
from .matmul import ENGINES, Engine, approx_matmul, emulate_gemm
from .native import fast_key, prepare_fast
from .plan import Plan
from .table import MAX_WIDTH, ProductTable
from .tuner import ENGINE_FUNCTIONS, TUNE_MAX_NS, TUNE_SPREAD

__all__ = [
    "BAG_BLOCK_ELEMENTS", "BLOCK_ELEMENTS", "ENGINES", "GATHER_BLOCK_ELEMENTS", "MAX_PLANS",
    "MAX_TUNED", "MAX_WIDTH", "PART_ELEMENTS", "TUNE_MAX_NS", "TUNE_SPREAD", "ApproxMatmul",
    "Engine", "Grad", "Plan", "ProductTable", "approx_matmul", "approx_matmul_grad", "cache",
    "choices", "emulate_gemm", "retune",
]

# the names of the single-module approx.py that scripts and tests reach for
_TUNED = cache.TUNED
_FAST = cache.FAST
_ENGINES = ENGINE_FUNCTIONS
_estimate = estimate
_fast_key = fast_key
_prepare_fast = prepare_fast
