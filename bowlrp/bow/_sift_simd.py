"""Eight float64 lanes as one numba value (``Vec8``): the 8 orientations of a SIFT cell in one register.

A cell's 8 orientation values are contiguous, and the gathering / normalisation and the column pooling
keep 8 per-orientation running sums. Written as 8 scalars, LLVM's SLP vectoriser leaves them scalar
(checked with ``inspect_asm``: ``vaddsd``, no ``vaddpd``), and as an 8-element array the loop is slower
still. These intrinsics emit LLVM's ``<8 x double>`` directly, so each line below is one vector
instruction (AVX-512) or two (AVX2); numba keeps a ``Vec8`` local in a register.

Every operation is lane by lane with IEEE rounding, exactly the scalar operation on each lane (no
fused multiply-add, no reassociation): code written with them gives the same bits as the scalar code
it replaces. :func:`hsum8` adds the lanes in the fixed order ``((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7))``.
The encoding's word selection uses :func:`vmin8`, :func:`vlane8` and :func:`vcompress_le8` (compare and
compress: the indices of the lanes at or below a bound).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models, register_default
from numba.extending import intrinsic

from bowlrp.jit import jit_serial

__all__ = ["vzero8", "vload8", "vstore8", "vsplat8", "vadd8", "vmul8", "vmin8", "hsum8", "vselect_lane8",
           "vlane8", "vcompress_le8", "compiles_for_avx512", "empty_aligned", "zeros_aligned",
           "empty_aligned_array"]

_DOUBLE = ir.DoubleType()
_VEC = ir.VectorType(_DOUBLE, 8)
_I64 = ir.IntType(64)
_LANES = ir.VectorType(_I64, 8)
_MASK0 = ir.VectorType(ir.IntType(32), 8)
_BITS = ir.VectorType(ir.IntType(1), 8)


class Vec8Type(types.Type):
    """Numba type of eight float64 lanes (LLVM ``<8 x double>``)."""

    def __init__(self):
        super().__init__(name="Vec8")


vec8 = Vec8Type()


@register_default(Vec8Type)
class _Vec8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _element_pointer(context, builder, arr_type, arr, index):
    """Pointer to ``arr[index]`` of a C-contiguous 1-D float64 array (index known in range)."""
    array = context.make_array(arr_type)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arr_type, array, [index], wraparound=False,
                                    boundscheck=False)


def _broadcast(builder, value, vector_type):
    """IR: ``value`` in every lane of ``vector_type``."""
    vec = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(_I64, 0))
    return builder.shuffle_vector(vec, ir.Constant(vector_type, ir.Undefined), ir.Constant(_MASK0, [0] * 8))


def _splat(builder, value):
    return _broadcast(builder, value, _VEC)


def _is_float_array(t):
    # any layout: a row of a C-contiguous 2-D block is typed "A" but has unit stride; the caller
    # guarantees the 8 elements from ``index`` are contiguous
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float64


@intrinsic
def vzero8(typingctx):
    """Eight lanes of +0.0."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * 8)

    return vec8(), codegen


@intrinsic
def vsplat8(typingctx, x):
    """Eight copies of the float ``x``."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float64))

    return vec8(x), codegen


@intrinsic
def vload8(typingctx, arr, index):
    """``arr[index : index + 8]`` of a 1-D float64 array whose 8 elements from ``index`` are contiguous
    (no bounds check: the caller's)."""
    if not _is_float_array(arr) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], index)
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=8)

    return vec8(arr, index), codegen


@intrinsic
def vstore8(typingctx, arr, index, v):
    """``arr[index : index + 8] = v`` (8 contiguous elements of a 1-D float64 array; no bounds check)."""
    if not _is_float_array(arr) or not isinstance(index, types.Integer) or v != vec8:
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], index)
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=8)
        return context.get_dummy_value()

    return types.none(arr, index, v), codegen


def _binary(name, emit):
    def typer(typingctx, a, b):
        if a != vec8 or b != vec8:
            return None

        def codegen(context, builder, sig, args):
            return emit(builder, args[0], args[1])

        return vec8(a, b), codegen

    typer.__name__ = name
    return intrinsic(typer)


vadd8 = _binary("vadd8", lambda b, x, y: b.fadd(x, y))
vadd8.__doc__ = "Lane-wise ``a + b``."
vmul8 = _binary("vmul8", lambda b, x, y: b.fmul(x, y))
vmul8.__doc__ = "Lane-wise ``a * b``."
# Python's min(a, b) as numba compiles it for floats: ``b if b < a else a`` (first argument on ties)
vmin8 = _binary("vmin8", lambda b, x, y: b.select(b.fcmp_ordered("<", y, x), y, x))
vmin8.__doc__ = "Lane-wise ``min(a, b)`` (``a`` on ties, as the scalar ``min``; no NaN handling)."


@intrinsic
def vselect_lane8(typingctx, lane, x, y, z):
    """Lane ``lane`` (0..7) holds ``x``, lane ``(lane + 1) & 7`` holds ``y``, every other lane ``z``."""
    if not isinstance(lane, types.Integer) or not all(isinstance(t, types.Float) for t in (x, y, z)):
        return None

    def codegen(context, builder, sig, args):
        # (a mask of bits 1 << lane and its rotation was slower: kmov and shifts on the scalar side)
        lanes = ir.Constant(_LANES, list(range(8)))
        first = _broadcast(builder, context.cast(builder, args[0], sig.args[0], types.int64), _LANES)
        nxt = builder.and_(builder.add(first, ir.Constant(_LANES, [1] * 8)), ir.Constant(_LANES, [7] * 8))
        splat = [_splat(builder, context.cast(builder, a, t, types.float64))
                 for a, t in zip(args[1:], sig.args[1:])]
        rest = builder.select(builder.icmp_signed("==", lanes, nxt), splat[1], splat[2])
        return builder.select(builder.icmp_signed("==", lanes, first), splat[0], rest)

    return vec8(lane, x, y, z), codegen


@intrinsic
def hsum8(typingctx, v):
    """The lanes' sum in the fixed order ``((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))``."""
    if v != vec8:
        return None

    def codegen(context, builder, sig, args):
        lane = [builder.extract_element(args[0], ir.Constant(_I64, k)) for k in range(8)]
        left = builder.fadd(builder.fadd(lane[0], lane[1]), builder.fadd(lane[2], lane[3]))
        right = builder.fadd(builder.fadd(lane[4], lane[5]), builder.fadd(lane[6], lane[7]))
        return builder.fadd(left, right)

    return types.float64(v), codegen


@intrinsic
def vlane8(typingctx, v, lane):
    """Lane ``lane`` (0..7, not checked) of ``v`` as a float."""
    if v != vec8 or not isinstance(lane, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], context.cast(builder, args[1], sig.args[1], types.int64))

    return types.float64(v, lane), codegen


@intrinsic
def vcompress_le8(typingctx, arr, index, bound, out, count):
    """Append the indices ``index + l`` of the lanes ``l`` with ``arr[index + l] <= bound`` to ``out``.

    They are written in increasing order at ``out[count:]`` and the new count is returned: the scalar
    ``out[count] = j; count += arr[j] <= bound`` for j = index..index+7, one compare, one compress
    and one store (``llvm.experimental.vector.compress``: AVX-512 ``vpcompressq``; LLVM emulates it
    on other CPUs, correct but slow: a store per lane to the stack and a vector reload). All 8 slots
    ``out[count:count + 8]`` are stored, the unselected ones with junk, so ``count + 8 <= len(out)``
    is the caller's to ensure (no bounds check), as is the contiguity of ``arr[index:index + 8]``. A
    NaN lane is not selected (ordered comparison, as the scalar ``<=``).
    """
    if (not _is_float_array(arr) or not isinstance(index, types.Integer) or not isinstance(bound, types.Float)
            or not (isinstance(out, types.Array) and out.ndim == 1 and out.dtype == types.int64
                    and out.layout == "C")
            or not isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.int64)
        count = context.cast(builder, args[4], sig.args[4], types.int64)
        src = _element_pointer(context, builder, sig.args[0], args[0], index)
        values = builder.load(builder.bitcast(src, _VEC.as_pointer()), align=8)
        bound = _splat(builder, context.cast(builder, args[2], sig.args[2], types.float64))
        keep = builder.fcmp_ordered("<=", values, bound)
        lanes = builder.add(_broadcast(builder, index, _LANES), ir.Constant(_LANES, list(range(8))))
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LANES, [_LANES, _BITS, _LANES]),
            "llvm.experimental.vector.compress.v8i64")
        packed = builder.call(compress, [lanes, keep, ir.Constant(_LANES, ir.Undefined)])
        dst = _element_pointer(context, builder, sig.args[3], args[3], count)
        builder.store(packed, builder.bitcast(dst, _LANES.as_pointer()), align=8)
        byte = ir.IntType(8)
        popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(byte, [byte]),
                                                  "llvm.ctpop.i8")
        kept = builder.call(popcount, [builder.bitcast(keep, byte)])
        return builder.add(count, builder.zext(kept, _I64))

    return types.int64(arr, index, bound, out, count), codegen


def compiles_for_avx512():
    """Whether numba compiles for a CPU with AVX-512F (``NUMBA_CPU_FEATURES`` when set, else the host's;
    numba's cache keeps the builds of different CPUs apart) with an LLVM that has the vector compress
    of :func:`vcompress_le8` (LLVM 19 and later; older numba releases ship an older LLVM). Kernels that
    pay only with AVX-512's masked moves and ``vpcompressq`` choose their implementation by it."""
    if binding.llvm_version_info < (19,):
        return False
    features = numba.config.CPU_FEATURES
    if features is None:  # numba compiles for the host
        features = binding.get_host_cpu_features().flatten()
    # (with NUMBA_CPU_NAME and no features, e.g. "generic" for a portable cache, numba sets them to "":
    # the CPU name's own features apply, unknown here, so the path that needs none is chosen)
    return "+avx512f" in features.split(",")


#: bytes of one ``Vec8`` and of a cache line: loads and stores that straddle two lines cost about
#: twice as much (the column pooling ran 20-25 % slower on scratch at 32 bytes off a line)
ALIGNMENT = 64


@jit_serial(inline="always")
def empty_aligned(n):
    """A new float64 array of ``n`` elements starting on a 64-byte boundary (numba allocates at 32)."""
    raw = np.empty(n + ALIGNMENT // 8)
    skip = (-(raw.ctypes.data % ALIGNMENT) % ALIGNMENT) // 8
    return raw[skip : skip + n]


@jit_serial(inline="always")
def zeros_aligned(n):
    """:func:`empty_aligned` filled with +0.0."""
    out = empty_aligned(n)
    for k in range(n):
        out[k] = 0.0
    return out


def empty_aligned_array(shape):
    """A new C-contiguous float64 array of ``shape`` starting on a 64-byte boundary (from Python)."""
    return empty_aligned.py_func(int(np.prod(shape))).reshape(shape)  # its Python body, uncompiled
