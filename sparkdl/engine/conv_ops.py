"""Convolution and pooling arithmetic on NCHW float arrays (no layer state).

Geometry follows Keras/TensorFlow: ``valid`` means no padding; ``same`` gives
``ceil(size / stride)`` outputs with the padding split as evenly as possible, the extra cell
at the end. In pooling, padded cells never win a max nor count in an average; for even input
sizes (CIFAR's 32 -> 16 -> 8 -> 4) ``same`` pooling is exactly Caffe's ceil-mode pooling.

Nothing here loops over pixels or output positions; loops run over kernel offsets only.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def out_size_and_pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """``(output size, pad before, pad after)`` along one spatial axis."""
    if padding == "valid":
        return (size - k) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def pad_nchw(x, pads, value=0.0):
    """Copy ``x`` into a buffer with ``pads = (top, bottom, left, right)`` cells of ``value``."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def windows(xp, kh, kw, sh, sw, oh, ow):
    """Zero-copy view ``(N, C, kh, kw, OH, OW)`` of every kernel window of padded ``xp``."""
    sn, sc, sy, sx = xp.strides
    return as_strided(xp, (xp.shape[0], xp.shape[1], kh, kw, oh, ow), (sn, sc, sy, sx, sy * sh, sx * sw),
                      writeable=False)


def add_windows(dxp, dwin, sh, sw):
    """Scatter-add ``dwin (N, C, kh, kw, OH, OW)`` back into padded ``dxp``: col2im, one
    strided slice per kernel offset."""
    _, _, kh, kw, oh, ow = dwin.shape
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += dwin[:, :, i, j]


def unpad(xp, pads):
    top, bottom, left, right = pads
    h, w = xp.shape[2], xp.shape[3]
    return xp[:, :, top:h - bottom, left:w - right]


# ---- convolution ---------------------------------------------------------------------------
def conv2d_forward(x, kernel, bias, strides, pads):
    """``y[n, f] = sum_c kernel[f, c] * x[n, c] + bias[f]`` (cross-correlation).
    Returns ``(y, cache)``; the cache holds what the backward pass needs."""
    f, c, kh, kw = kernel.shape
    sh, sw = strides
    xp = pad_nchw(x, pads)
    n = x.shape[0]
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    cols = np.ascontiguousarray(windows(xp, kh, kw, sh, sw, oh, ow)).reshape(n, c * kh * kw, oh * ow)
    y = np.matmul(kernel.reshape(f, -1), cols)
    if bias is not None:
        y += bias[:, None]
    return y.reshape(n, f, oh, ow), (cols, xp.shape, x.shape)


def conv2d_backward(dy, kernel, cache, strides, pads, need_dx=True):
    """``(dkernel, dbias, dx)`` for the upstream gradient ``dy``; ``dx`` is None when not needed."""
    cols, xp_shape, x_shape = cache
    f, c, kh, kw = kernel.shape
    n, _, oh, ow = dy.shape
    d = dy.reshape(n, f, oh * ow)
    dkernel = np.einsum("nfp,nkp->fk", d, cols, optimize=True).reshape(kernel.shape)
    dbias = d.sum(axis=(0, 2))
    if not need_dx:
        return dkernel, dbias, None
    dcols = np.matmul(kernel.reshape(f, -1).T, d).reshape(n, c, kh, kw, oh, ow)
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    add_windows(dxp, dcols, *strides)
    return dkernel, dbias, np.ascontiguousarray(unpad(dxp, pads))


# ---- pooling -------------------------------------------------------------------------------
def max_pool_forward(x, pool, strides, pads):
    kh, kw = pool
    sh, sw = strides
    xp = pad_nchw(x, pads, value=-np.inf)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    win = windows(xp, kh, kw, sh, sw, oh, ow)
    y = win.max(axis=(2, 3))
    return y, (xp.shape, win, y)


def max_pool_backward(dy, cache, strides, pads):
    """The gradient goes to the first maximum of each window (row-major), once per window."""
    xp_shape, win, y = cache
    n, c, kh, kw, oh, ow = win.shape
    flat = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, oh, ow, kh * kw)
    arg = flat.argmax(axis=-1)
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            hit = arg == i * kw + j
            dxp[:, :, i:i + strides[0] * (oh - 1) + 1:strides[0],
                j:j + strides[1] * (ow - 1) + 1:strides[1]] += np.where(hit, dy, 0)
    return np.ascontiguousarray(unpad(dxp, pads))


def avg_pool_forward(x, pool, strides, pads):
    """Average over the cells of each window that lie inside the input (padding excluded)."""
    kh, kw = pool
    sh, sw = strides
    xp = pad_nchw(x, pads)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    counts = _window_counts(x.shape[2:], pool, strides, pads, (oh, ow)).astype(x.dtype)
    y = windows(xp, kh, kw, sh, sw, oh, ow).sum(axis=(2, 3)) / counts
    return y, (xp.shape, counts)


def avg_pool_backward(dy, cache, pool, strides, pads):
    xp_shape, counts = cache
    kh, kw = pool
    share = dy / counts
    n, c, oh, ow = dy.shape
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    dwin = np.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))
    add_windows(dxp, dwin, *strides)
    return np.ascontiguousarray(unpad(dxp, pads))


def _window_counts(hw, pool, strides, pads, out_hw):
    """How many real (unpadded) cells each output window covers: an (OH, OW) array."""
    counts = []
    for size, k, s, before, out in zip(hw, pool, strides, (pads[0], pads[2]), out_hw):
        start = np.arange(out) * s - before
        counts.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return np.outer(counts[0], counts[1])
