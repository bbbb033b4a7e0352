"""Dense and convolution layers: the linear maps with weights (``linear`` / ``linear_transpose``).

Dense layers use numpy's matmul (BLAS); convolutions unfold the input with a numba kernel
(``unfold``: one (K, P) column matrix per image) and run one GEMM per image (a batched GEMM over
the groups of a grouped convolution), their transpose one GEMM and a numba ``fold``; a 1x1
convolution with stride 1 and no padding skips both.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from bowlrp.jit import limited_threads, n_parts, split_batch
from nets import _conv_kernels
from nets._memory import keep_freed_memory
from nets.layers.base import Layer, _as_param, _check_input, _float_dtype, _pair, _pool_out_size

__all__ = ["Dense", "Conv2D"]

# im2col matrices are built in batch chunks of at most this many elements (16 MiB in float32):
# bounded memory, and mostly cache-resident columns between im2col/col2im and their GEMM. Much
# smaller chunks were faster single-threaded but far slower with threads on a busy machine (every
# chunk is a parallel region whose threads must all be scheduled), so this is the compromise.
_IM2COL_MAX_ELEMENTS = 1 << 22
#: an image whose column matrix is larger is unfolded in bands of output rows of at most this many
#: elements (1 MiB in float32: the L2 cache of one core)
_BAND_MAX_ELEMENTS = 1 << 18
#: images whose column matrices are smaller go together in blocks of at most this many elements
#: (the same 1 MiB: LeNet's second convolution, batch 256, went from blocks of 26 images, 16 MiB
#: streamed through memory between unfold and GEMM, to one image per block; forward 49 -> 48 ms,
#: with W+ stacked 77 -> 74 ms, transposed 37 -> 36 ms; the VGG layers are unchanged)
_BLOCK_MAX_ELEMENTS = 1 << 18


_pool = None
_pool_lock = threading.Lock()


def _forget_pool():
    global _pool
    _pool = None  # a forked child has the pool object but none of its threads: waiting on it hangs


os.register_at_fork(after_in_child=_forget_pool)
# ``blas_held``: this thread's pass already holds BLAS at one thread; ``one_part``: see below
_state = threading.local()


@contextlib.contextmanager
def one_blas_thread_for(layers):
    """Hold BLAS at one thread for a whole pass over ``layers`` when they include a convolution
    and numba has more than one thread (the convolutions then use their own worker threads).

    Changing the BLAS thread count per layer made every following multi-threaded BLAS call slow
    (VGG-64, batch 32, 2 threads: LRP 863 ms toggling per layer, 350 ms held for the pass).
    """
    if (
        getattr(_state, "blas_held", False)
        or _threads() < 2
        or not any(isinstance(layer, Conv2D) for layer in layers)
    ):
        yield
        return
    _state.blas_held = True
    try:
        with limited_threads(1, numba_threads=False, user_api="blas"):
            yield
    finally:
        _state.blas_held = False


@contextlib.contextmanager
def one_thread_per_part():
    """Run a block as one part of a batch that ``bowlrp.jit.split_batch`` spreads over threads: the
    convolutions use no worker pool of their own (and leave BLAS alone: ``split_batch`` already
    holds it at one thread), so one thread per part and nothing nested."""
    before = getattr(_state, "one_part", False)
    _state.one_part = True
    try:
        yield
    finally:
        _state.one_part = before


def split_over_threads(func, *arrays, work):
    """``func(*arrays)`` (per-sample work on arrays sharing axis 0) through ``bowlrp.jit.split_batch``:
    with several numba threads and enough ``work`` the batch is cut into contiguous parts, one per
    thread, each run in ``one_thread_per_part``. The one place where ``nets`` splits a batch over
    threads (the forward pass and LRP); results equal the whole call up to float round-off."""

    if n_parts(len(arrays[0]), work) < 2:
        return func(*arrays)  # (split_batch's own rule: the whole batch keeps the convolutions' pool)

    def part(*parts):
        with one_thread_per_part():
            return func(*parts)

    return split_batch(part, *arrays, work=work)


def _threads():
    """The threads a convolution may use: numba's count, or 1 in ``one_thread_per_part``."""
    return 1 if getattr(_state, "one_part", False) else numba.get_num_threads()


def _run_blocks(blocks, work):
    """Call ``work(i0, i1, r0, r1, serial)`` for every block of ``Conv2D._blocks``.

    With one thread (``_threads()``) in sequence with the serial kernels (their build
    choice costs ~5 us a call, 5 ms of a VGG-224 pass with its 500 bands), with several threads but
    one image in sequence with the kernels' own choice of build.
    With more, the images are dealt out to that many worker threads, each running its images'
    blocks in order with the serial kernels and single-threaded BLAS: one fork/join per layer
    instead of a numba parallel region and a BLAS thread team per block (which on two cores made
    two threads slower than one: the pools oversubscribe them and every small region waits for all
    its threads to be scheduled). A block's numbers do not depend on the thread that runs it; the
    bands of one image stay in one thread because ``fold`` accumulates across them.
    """
    global _pool
    threads = _threads()
    images = sorted({b[0] for b in blocks})
    if threads < 2 or len(images) < 2:
        for block in blocks:
            work(*block, threads < 2)  # one thread: the serial kernels, without asking per call
        return
    threads = min(threads, len(images))
    share = {i0: k % threads for k, i0 in enumerate(images)}
    lists = [[b for b in blocks if share[b[0]] == t] for t in range(threads)]

    def run(lst):
        for block in lst:
            work(*block, True)

    with _pool_lock:
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="nets-conv")
        pool = _pool
    # (measured on VGG-224, 2 threads: without the BLAS limit the workers' GEMMs start a BLAS
    # team each and the pass runs 2-10x slower)
    with (
        contextlib.nullcontext()
        if getattr(_state, "blas_held", False)
        else limited_threads(1, numba_threads=False, user_api="blas")
    ):
        for future in [pool.submit(run, lst) for lst in lists]:
            future.result()


def _times(out, times):
    """``times * out``: in place when the dtypes allow (``out`` is the caller's fresh array)."""
    if np.result_type(out, times) == out.dtype:
        return np.multiply(out, times, out=out)
    return times * out


class _Weighted(Layer):
    """A linear layer with a weight array ``W`` and an optional bias ``b`` (saved as such)."""

    is_linear = True

    def get_arrays(self):
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    @classmethod
    def from_config(cls, config, arrays=None):
        arrays = arrays or {}
        return cls(arrays["W"], arrays.get("b"), **dict(config or {}))


class Dense(_Weighted):
    """Fully connected layer ``y = x @ W.T + b``.

    Parameters
    ----------
    W : array of shape (out_features, in_features)
    b : array of shape (out_features,), optional
        No bias when None.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Dense
    >>> Dense(np.eye(2), np.array([1.0, 0.0])).forward(np.array([[1.0, 2.0]]))
    array([[2., 2.]])
    """

    kind = "Dense"
    is_linear = True

    def __init__(self, W, b=None):
        self.W = _as_param(W, "Dense W", ndim=2)
        self.b = None if b is None else _as_param(b, "Dense b", dtype=self.W.dtype, ndim=1)
        if self.b is not None and self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"Dense b has shape {self.b.shape}, expected ({self.W.shape[0]},)")

    @property
    def in_features(self):
        return self.W.shape[1]

    @property
    def out_features(self):
        return self.W.shape[0]

    def linear(self, x, W, b):
        y = x @ W.T
        if b is not None:
            y += b
        return y

    def linear_transpose(self, s, W, input_shape, times=None):
        """``W^T s`` per sample; with ``times``, ``times * W^T s`` (the product made in place)."""
        out = s @ W
        return out if times is None else _times(out, times)

    def linear_transpose_ones(self, s, input_shape):
        """``linear_transpose`` with every weight 1 (the Flat rule): each input gets sum_j s_j."""
        return np.broadcast_to(s.sum(axis=1, keepdims=True), input_shape)

    def check_input(self, x):
        _check_input(x, self, 2, self.in_features)

    def forward(self, x):
        self.check_input(x)
        return self.linear(x, self.W, self.b)

    def backward(self, x, y, grad):
        return grad @ self.W


class Conv2D(_Weighted):
    """2-D convolution (cross-correlation, as in PyTorch and ONNX), NCHW, optionally grouped and
    dilated.

    Parameters
    ----------
    W : array of shape (out_channels, in_channels // groups, kh, kw)
    b : array of shape (out_channels,), optional
    stride, padding : int or pair of ints
        Zero padding on both sides of each spatial axis (use ``nets.Pad`` before the convolution
        for asymmetric padding).
    groups : int, default 1
        Input and output channels are split into ``groups`` blocks; output block g sees only input
        block g (``groups == in_channels`` is a depthwise convolution).
    dilation : int or pair of ints, default 1
        Spacing between kernel taps.

    Notes
    -----
    A dilated kernel is evaluated as the dense kernel with zeros between the taps (the numba
    ``im2col`` kernels stay the ones the trainer shares). The LRP rules modify the *true* taps and
    the zeros are inserted afterwards, so Flat and WSquare never give weight to the inserted zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Conv2D
    >>> conv = Conv2D(np.ones((1, 1, 2, 2)), stride=2)
    >>> conv.forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[10., 18.],
           [42., 50.]])
    >>> Conv2D(np.ones((4, 1, 3, 3)), groups=4, dilation=2).output_shape((1, 4, 9, 9))
    (1, 4, 5, 5)
    """

    kind = "Conv2D"
    is_linear = True

    def __init__(self, W, b=None, stride=1, padding=0, groups=1, dilation=1):
        self.W = _as_param(W, "Conv2D W", ndim=4)
        self.b = None if b is None else _as_param(b, "Conv2D b", dtype=self.W.dtype, ndim=1)
        if self.b is not None and self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"Conv2D b has shape {self.b.shape}, expected ({self.W.shape[0]},)")
        self.stride = _pair(stride, "Conv2D stride", 1)
        self.padding = _pair(padding, "Conv2D padding", 0)
        self.dilation = _pair(dilation, "Conv2D dilation", 1)
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"Conv2D groups must be a positive int, got {groups!r}")
        self.groups = int(groups)
        if self.W.shape[0] % self.groups:
            raise ValueError(
                f"Conv2D: {self.W.shape[0]} output channels do not split into {self.groups} groups"
            )
        keep_freed_memory()  # (once per process: column matrices and outputs of tens of MiB per call)

    def __setstate__(self, state):
        super().__setstate__(state)
        keep_freed_memory()  # (a process that unpickles a model runs no __init__: a pool's worker)

    @property
    def in_channels(self):
        return self.W.shape[1] * self.groups

    @property
    def out_channels(self):
        return self.W.shape[0]

    @property
    def kernel_size(self):
        return self.W.shape[2:]

    @property
    def effective_kernel_size(self):
        """The kernel's extent on the image, dilation included."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))

    def get_config(self):
        config = {"stride": list(self.stride), "padding": list(self.padding)}
        # written only when used, so files and configs of plain convolutions are unchanged
        if self.groups != 1:
            config["groups"] = self.groups
        if self.dilation != (1, 1):
            config["dilation"] = list(self.dilation)
        return config

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        kh, kw = self.effective_kernel_size
        oh = _pool_out_size(h, kh, self.stride[0], self.padding[0], self, "height")
        ow = _pool_out_size(w, kw, self.stride[1], self.padding[1], self, "width")
        return (n, self.out_channels, oh, ow)

    def _chunks(self, n, rows_per_image, k):
        per = max(1, _IM2COL_MAX_ELEMENTS // max(1, rows_per_image * k))
        return [(i, min(n, i + per)) for i in range(0, n, per)]

    def _dilated(self, W):
        if self.dilation == (1, 1):
            return W
        dh, dw = self.dilation
        kh, kw = W.shape[2:]
        out = np.zeros(W.shape[:2] + ((kh - 1) * dh + 1, (kw - 1) * dw + 1), dtype=W.dtype)
        out[:, :, ::dh, ::dw] = W
        return out

    def _is_pointwise(self, kh, kw):
        """A 1x1 kernel, stride 1, no padding: the unfolded input is the input itself."""
        return (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def _blocks(self, n, oh, ow, k):
        """``(i0, i1, r0, r1)``: the images and output rows each unfold + GEMM step covers. Images
        whose column matrix is small go together (``_chunks``); a larger one is cut into bands of
        output rows whose columns stay in the L2 cache between the unfold and the GEMM (otherwise
        both stream the whole matrix through memory, which costs as much as the arithmetic)."""
        if oh * ow * k <= _BAND_MAX_ELEMENTS:
            per = max(1, _BLOCK_MAX_ELEMENTS // (oh * ow * k))
            return [(i0, min(n, i0 + per), 0, oh) for i0 in range(0, n, per)]
        rows = max(1, _BAND_MAX_ELEMENTS // (ow * k))
        return [(i, i + 1, r0, min(oh, r0 + rows)) for i in range(n) for r0 in range(0, oh, rows)]

    def linear(self, x, W, b):
        n = x.shape[0]
        _, _, oh, ow = self.output_shape(x.shape)
        W = self._dilated(W)
        o, _, kh, kw = W.shape  # W may be a stack of modified weights (more output channels)
        dtype = _float_dtype(x, W)
        # writeable too: a read-only input (a broadcast "ones" map) would compile unfold once more
        x = np.require(x, dtype=dtype, requirements=["C", "W"])
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        g = self.groups
        k, p = W2.shape[1] * g, oh * ow
        Wg = W2.reshape(g, o // g, k // g)
        out = np.empty((n, o, oh, ow), dtype=dtype)
        out3 = out.reshape(n, o, p)
        pointwise = self._is_pointwise(kh, kw)

        def work(i0, i1, r0, r1, serial):
            m, p0, p1 = i1 - i0, r0 * ow, r1 * ow
            if pointwise:
                cols = x.reshape(n, k, p)[i0:i1, :, p0:p1]
            else:
                cols = np.empty((m, k, p1 - p0), dtype=dtype)
                unfold = _conv_kernels.unfold.serial if serial else _conv_kernels.unfold
                unfold(x[i0:i1], kh, kw, *self.stride, *self.padding, r0, cols)
            # (O, K) @ (K, P) per image, straight into the NCHW output; the unfolded rows are
            # channel-major, so for a grouped convolution group gi owns one contiguous block of
            # them: (G, O/G, K/G) @ (m, G, K/G, P) in one batched GEMM (splitting an axis of the
            # output view is always a view, so ``out=`` writes into ``out``)
            target = out3[i0:i1, :, p0:p1]
            if g == 1:
                np.matmul(W2, cols, out=target)
            else:
                np.matmul(Wg, cols.reshape(m, g, k // g, p1 - p0), out=target.reshape(m, g, o // g, p1 - p0))

        _run_blocks(self._blocks(n, oh, ow, k), work)
        if b is not None:
            out += b.astype(dtype, copy=False).reshape(1, -1, 1, 1)
        return out

    def linear_transpose(self, s, W, input_shape, times=None):
        """The transposed convolution ``W^T s``; with ``times`` (input-shaped), ``times * W^T s``,
        multiplied into each image's planes as the fold finishes them when it can (LRP's product
        with the input, without another pass over an input-sized array)."""
        n = input_shape[0]
        _, o, oh, ow = s.shape
        W = self._dilated(W)
        kh, kw = W.shape[2:]
        dtype = _float_dtype(s, W)
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        s3 = np.ascontiguousarray(s, dtype=dtype).reshape(n, o, oh * ow)
        g = self.groups
        k, p = W2.shape[1] * g, oh * ow
        Wt = W2.reshape(g, o // g, k // g).transpose(0, 2, 1)  # (G, K/G, O/G)
        out = np.empty(input_shape, dtype=dtype)
        pointwise = self._is_pointwise(kh, kw)
        # stride 1, input rows as long as output rows: ``fold_same`` adds each tap's rows at once
        same = not pointwise and self.stride == (1, 1) and ow == input_shape[3]
        fused = same and times is not None and times.dtype == dtype
        if fused:
            times = np.ascontiguousarray(times)
        no_times = np.empty((0, 0, 0, 0), dtype=dtype)

        def work(i0, i1, r0, r1, serial):
            m, p0, p1 = i1 - i0, r0 * ow, r1 * ow
            # (K, O) @ (O, P) per image: the unfolded columns of the transposed convolution (for
            # a pointwise one, the input gradient itself)
            if pointwise:
                cols = out.reshape(n, k, p)[i0:i1, :, p0:p1]
            else:
                cols = np.empty((m, k, p1 - p0), dtype=dtype)
            sb = s3[i0:i1, :, p0:p1]
            if g == 1:
                np.matmul(Wt[0], sb, out=cols)
            else:
                np.matmul(Wt, sb.reshape(m, g, o // g, p1 - p0), out=cols.reshape(m, g, k // g, p1 - p0))
            if same:  # (cols is this block's scratch: fold_same may overwrite it)
                fold = _conv_kernels.fold_same.serial if serial else _conv_kernels.fold_same
                scale = times[i0:i1] if fused and r1 == oh else no_times
                fold(cols, kh, kw, *self.padding, r0, r0 == 0, scale, out[i0:i1])
            elif not pointwise:
                fold = _conv_kernels.fold.serial if serial else _conv_kernels.fold
                fold(cols, kh, kw, *self.stride, *self.padding, r0, r0 == 0, out[i0:i1])

        _run_blocks(self._blocks(n, oh, ow, k), work)
        return out if times is None or fused else _times(out, times)

    def linear_transpose_ones(self, s, input_shape):
        """``linear_transpose`` with every weight 1 (the Flat rule): one GEMM with a single output
        channel per group carrying the group's channel sum of ``s``, instead of ``out_channels``."""
        n, o = s.shape[:2]
        g = self.groups
        ones = np.ones((g, input_shape[1] // g, *self.kernel_size), dtype=s.dtype)
        if g == 1:
            s_sum = s.sum(axis=1, keepdims=True)
            if self.dilation == (1, 1) and not self._is_pointwise(*self.kernel_size):
                return self._fold_ones(s_sum, input_shape)
        else:
            s_sum = s.reshape(n, g, o // g, *s.shape[2:]).sum(axis=2)
        return self.linear_transpose(s_sum, ones, input_shape)

    def _fold_ones(self, s_sum, input_shape):
        """The all-ones transposed convolution of the channel sum ``s_sum`` (N, 1, OH, OW): every
        input channel gets the same map, so ``fold`` runs once, on one channel, with every kernel
        tap's column being ``s_sum`` itself (a stride-0 view: no GEMM, no column matrix); the other
        channels are a broadcast view of it. The same numbers as the GEMM with a ones kernel
        (``1 * s`` is exact, and ``fold`` adds the taps in the same order for every channel)."""
        n = input_shape[0]
        kh, kw = self.kernel_size
        p = s_sum.shape[2] * s_sum.shape[3]
        cols = np.broadcast_to(np.ascontiguousarray(s_sum).reshape(n, 1, p), (n, kh * kw, p))
        one = np.empty((n, 1) + tuple(input_shape[2:]), dtype=s_sum.dtype)
        _conv_kernels.fold(cols, kh, kw, *self.stride, *self.padding, 0, True, one)
        return np.broadcast_to(one, input_shape)

    def check_input(self, x):
        _check_input(x, self, 4, self.in_channels)
        self.output_shape(x.shape)  # raises when the image is smaller than the kernel

    def forward(self, x):
        self.check_input(x)
        return self.linear(x, self.W, self.b)

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, self.W, x.shape)
