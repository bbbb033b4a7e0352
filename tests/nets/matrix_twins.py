"""Dense-matrix twins of the LRP rules (SPEC section 3), written independently of nets' engine.

A dense or convolution layer is unrolled into an explicit matrix M of shape (out_positions,
in_positions) by loops over its connections, and every rule is evaluated with M, its positive and
negative parts and plain numpy, formula by formula as the SPEC table states them.
"""

from __future__ import annotations

import numpy as np


def conv_matrix(W, in_shape, stride, padding, groups=1, dilation=(1, 1)):
    """(O*OH*OW, C*H*W) matrix of a convolution (per sample), built by looping over connections;
    also returns the output shape (O, OH, OW). ``groups``: output block g reads input block g;
    ``dilation``: spacing of the kernel taps."""
    o_n, cg, kh, kw = W.shape
    c, h, w = in_shape
    assert c == cg * groups and o_n % groups == 0
    og = o_n // groups
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    oh = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    ow = (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    M = np.zeros((o_n * oh * ow, c * h * w))
    for o in range(o_n):
        g = o // og
        for a in range(oh):
            for b in range(ow):
                row = (o * oh + a) * ow + b
                for k in range(cg):
                    cc = g * cg + k
                    for i in range(kh):
                        for j in range(kw):
                            y, x = a * sh - ph + i * dh, b * sw - pw + j * dw
                            if 0 <= y < h and 0 <= x < w:
                                M[row, (cc * h + y) * w + x] = W[o, k, i, j]
    return M, (o_n, oh, ow)


def bias_vector(b, out_shape):
    """Per-output-position bias (channel-major, matching the matrix rows)."""
    if b is None:
        return np.zeros(int(np.prod(out_shape)))
    per = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
    return np.repeat(b, per)


def stab(z, eps):
    d = z + eps * np.where(z >= 0, 1.0, -1.0)
    return d


def div(r, d):
    return np.divide(r, d, out=np.zeros_like(r), where=d != 0)


def pos(a):
    return np.maximum(a, 0)


def neg(a):
    return np.minimum(a, 0)


def rule_twin(name, M, b, x, R, eps=1e-6, connect=None, **kw):
    """Input relevance of one sample (flat vectors) under rule ``name`` with explicit matrices.

    ``connect`` is the connectivity (the matrix of the same layer with all weights 1), needed by Flat.
    """
    if name == "epsilon":
        return x * (M.T @ div(R, stab(M @ x + b, eps)))
    if name == "zplus":
        Mp, Mn = pos(M), neg(M)
        z = Mp @ pos(x) + Mn @ neg(x) + pos(b)
        s = div(R, stab(z, eps))
        return pos(x) * (Mp.T @ s) + neg(x) * (Mn.T @ s)
    if name == "alphabeta":
        alpha, beta = kw["alpha"], kw["beta"]
        Mp, Mn = pos(M), neg(M)
        za = Mp @ pos(x) + Mn @ neg(x) + pos(b)
        zb = Mn @ pos(x) + Mp @ neg(x) + neg(b)
        sa, sb = div(R, stab(za, eps)), div(R, stab(zb, eps))
        return alpha * (pos(x) * (Mp.T @ sa) + neg(x) * (Mn.T @ sa)) - beta * (
            pos(x) * (Mn.T @ sb) + neg(x) * (Mp.T @ sb)
        )
    if name == "gamma":
        g = kw["gamma"]
        # the gate uses the layer's unmodified output, with its bias even under zero_bias (zennit)
        z0 = M @ x + kw.get("gate_bias", b)
        Mgp, Mgn = M + g * pos(M), M + g * neg(M)
        zp = Mgp @ pos(x) + Mgn @ neg(x) + b + g * pos(b)
        zn = Mgn @ pos(x) + Mgp @ neg(x) + b + g * neg(b)
        sp = div(R * (z0 > 0), stab(zp, eps))
        sn = div(R * (z0 < 0), stab(zn, eps))
        return pos(x) * (Mgp.T @ sp + Mgn.T @ sn) + neg(x) * (Mgn.T @ sp + Mgp.T @ sn)
    if name == "zbox":
        lo, hi = kw["low"], kw["high"]
        Mp, Mn = pos(M), neg(M)
        s = div(R, stab(M @ x - Mp @ lo - Mn @ hi, eps))
        return x * (M.T @ s) - lo * (Mp.T @ s) - hi * (Mn.T @ s)
    if name == "wsquare":
        M2 = M * M
        s = div(R, stab(M2 @ np.ones_like(x) + b * b, eps))
        return M2.T @ s
    if name == "flat":
        s = div(R, stab(connect @ np.ones_like(x), eps))
        return connect.T @ s
    raise ValueError(name)
