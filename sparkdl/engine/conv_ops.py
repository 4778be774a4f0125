"""Convolution and pooling arithmetic for the conv and pooling layers: NCHW-shaped arrays at
the interface, channel-last (NHWC) memory inside, each batch split over the engine's compute
threads (``sparkdl.engine.threads``). Geometry is Keras/TensorFlow's: the layers pass explicit
``(top, bottom, left, right)`` pads from ``out_size_and_pads`` (``same``: ``ceil(n / s)``
outputs, the odd padding cell at the end), and padded cells never win a max nor count in an
average. Inputs may have any strides; outputs are NCHW-shaped views of channel-last buffers,
so conv -> pool -> conv chains never change layout. Work happens in the input's floating
dtype, promoted with the kernel's (float64 in the gradient checks).

Workspaces and aliasing: a *training* forward gets its layer's workspace ``ws`` (a dict the
layer owns), keeps there what backward needs, and returns its output in a workspace buffer
(the backward pass's dL/dx too) that the layer's next training call overwrites: fresh
multi-megabyte arrays page-fault every step, which doubled the cost of max pooling. Inside a
model step every output is consumed before its layer runs again; any other caller keeping a
training output across calls must copy it. A training forward's input and output must stay
unchanged until its backward. An *inference* forward (``ws=None``) returns fresh arrays and
leaves the workspace alone, so ``predict`` and plain layer calls never alias.

Convolution is a chunked im2col (rows ``(n, oy, ox)``, columns ``(i, j, c)``) and one GEMM
per chunk; for stride 1 and ``same``-like pads dL/dx is the correlation of the padded dL/dy
with the flipped kernel, otherwise a col2im adds one strided slice per kernel offset. Pooling
is separable (a pass along each spatial axis), and max pooling sends each window's gradient
to exactly one cell, its row-major first maximum, as PyTorch does. Python loops run over
kernel offsets and batch chunks only, never over pixels or output positions.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from sparkdl.engine import threads

# Sizes measured on a 2-core Skylake with 1 MB of L2 per core.
CHUNK_BYTES = 1 << 20          # im2col rows per GEMM: they stay in L2 between copy and GEMM
COL2IM_CHUNK_BYTES = 8 << 20   # col2im chunks are larger: fewer Python-level offset loops
FOLD_BIAS_K = 128              # below this K, the bias rides in the GEMM as a column of ones
KEEP_COLS_BYTES = 8 << 20      # a whole-batch im2col this small is kept from forward for dW
POOL_CHUNK_BYTES = 1 << 20     # pooling input per work item: its temporaries stay in L2
SMALL_BYTES = 1 << 19          # less work than this runs in the calling thread alone


def out_size_and_pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """``(output size, pad before, pad after)`` along one spatial axis."""
    if padding == "valid":
        return (size - k) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


# ---- buffers and work splitting ------------------------------------------------------------
def _buf(ws, name, shape, dtype, zero=False):
    """A ``shape`` array kept in ``ws[name]``. It only grows along the batch axis, so the smaller
    last batch of an epoch reuses it; a zeroed buffer stays zero wherever it is never written."""
    a = ws.get(name)
    if a is None or a.shape[0] < shape[0] or a.shape[1:] != tuple(shape[1:]) or a.dtype != dtype:
        a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
        ws[name] = a
    return a[:shape[0]]


def _cols_buf(ws, name, rows, k, fold, dtype):
    """im2col buffer ``(rows, k + fold)``; with ``fold`` its last column is all ones (never
    overwritten), which folds the bias into the GEMM."""
    a = ws.get(name)
    if a is None or a.shape[0] < rows or a.shape[1] != k + fold or a.dtype != dtype:
        a = np.empty((rows, k + fold), dtype)
        if fold:
            a[:, k] = 1
        ws[name] = a
    return a[:rows]


def _like(ws, name, channel_last, shape, dtype):
    """An NCHW-shaped buffer, channel-last in memory when ``channel_last``."""
    n, c, h, w = shape
    if channel_last:
        return _buf(ws, (name, "nhwc"), (n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return _buf(ws, (name, "nchw"), shape, dtype)


def _is_channel_last(x) -> bool:
    """Whether NCHW-shaped ``x`` is channel-last in memory (with one channel, either will do)."""
    return x.strides[1] < x.strides[3] or (x.shape[3] == 1 and x.strides[1] <= x.strides[2])


def _nthreads(work_bytes) -> int:
    return 1 if work_bytes < SMALL_BYTES else threads.get_num_threads()


def _per_chunk(n, nt, chunk_bytes, image_bytes) -> int:
    """Images per chunk: about ``chunk_bytes`` of work, and every thread gets some."""
    return int(max(1, min(-(-n // nt), chunk_bytes // max(image_bytes, 1))))


def _chunks(n, nb, nt):
    """Per thread, a contiguous share of the batch cut into ``(start, stop)`` chunks of ``nb``."""
    nt = max(1, min(nt, n))
    ends = [n * t // nt for t in range(nt + 1)]
    return [[(i, min(i + nb, ends[t + 1])) for i in range(ends[t], ends[t + 1], nb)]
            for t in range(nt)]


def _patches(xp, oh, ow, kh, kw, sh, sw):
    """Zero-copy ``(N, OH, OW, kh, kw, C)`` window view of a channel-last ``(N, H, W, C)`` array."""
    a, b, c, d = xp.strides
    return as_strided(xp, shape=(xp.shape[0], oh, ow, kh, kw, xp.shape[3]),
                      strides=(a, b * sh, c * sw, b, c, d), writeable=False)


# ---- convolution ---------------------------------------------------------------------------
def _flip_ok(kh, kw, strides, pads) -> bool:
    """dL/dx as a correlation of the padded dL/dy with the flipped kernel needs stride 1 and
    pads of at most k - 1 (it pads dL/dy by k - 1 - pad); with pads under (k - 1) / 2 the padded
    dL/dy would be mostly zeros, and the col2im is cheaper."""
    top, bottom, left, right = pads
    return (tuple(strides) == (1, 1) and max(top, bottom) <= kh - 1 and max(left, right) <= kw - 1
            and 2 * min(top, bottom) >= kh - 1 and 2 * min(left, right) >= kw - 1)


def conv2d_forward(x, kernel, bias, strides, pads, ws=None):
    """``y[n, f] = sum_c x[n, c] (*) kernel[f, c] + bias[f]`` (cross-correlation) for
    ``x (N, C, H, W)``, ``kernel (F, C, kh, kw)``, ``bias (F,)`` or None. ``ws``: the layer's
    workspace for a training forward, None for inference (see the module docstring)."""
    train = ws is not None
    ws = ws if train else {}
    dtype = np.result_type(x.dtype, kernel.dtype)
    n, c, h, w = x.shape
    f, _, kh, kw = kernel.shape
    sh, sw = strides
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    k = kh * kw * c
    fold = int(bias is not None and k < FOLD_BIAS_K)
    image_bytes = oh * ow * (k + fold) * dtype.itemsize        # one image's im2col rows
    nt = _nthreads(n * image_bytes)
    nb = _per_chunk(n, nt, CHUNK_BYTES, image_bytes)

    xp = _buf(ws, "xp", (n, hp, wp, c), dtype, zero=True)      # the border is never written
    wm = np.empty((k + fold, f), dtype)                         # rows ordered (i, j, c)
    wm[:k] = kernel.transpose(2, 3, 1, 0).reshape(k, f)
    if fold:
        wm[k] = bias
    y = _buf(ws, "y", (n, oh, ow, f), dtype) if train else np.empty((n, oh, ow, f), dtype)
    patches = _patches(xp, oh, ow, kh, kw, sh, sw)
    xt = x.transpose(0, 2, 3, 1)
    # The flipped-kernel backward takes dW from the dL/dy side's im2col when that is no wider
    # (F <= C); it then needs the unpadded channel-last input: the caller's when x already is
    # one (it must stay unchanged until backward), else a copy.
    xc = None
    if train and f <= c and _flip_ok(kh, kw, strides, pads):
        xc = xt if xt.flags.c_contiguous and xt.dtype == dtype else _buf(ws, "xc", (n, h, w, c), dtype)
    keep = train and xc is None and n * image_bytes < KEEP_COLS_BYTES
    cols_all = _cols_buf(ws, "cols_all", n * oh * ow, k, fold, dtype) if keep else None

    def work(chunks, t):
        part = None if keep else _cols_buf(ws, ("cols", t), nb * oh * ow, k, fold, dtype)
        for n0, n1 in chunks:
            m = (n1 - n0) * oh * ow
            xp[n0:n1, top:top + h, left:left + w] = xt[n0:n1]
            if xc is not None and xc is not xt:
                xc[n0:n1] = xt[n0:n1]
            cols = cols_all[n0 * oh * ow:n1 * oh * ow] if keep else part[:m]
            np.copyto(cols[:, :k].reshape(n1 - n0, oh, ow, kh, kw, c), patches[n0:n1])
            out = y[n0:n1].reshape(m, f)
            np.matmul(cols, wm, out=out)
            if bias is not None and not fold:
                out += bias

    threads.run_parts(work, _chunks(n, nb, nt))
    if train:
        ws["conv"] = dict(shape=(n, c, h, w, f, kh, kw, oh, ow), strides=(sh, sw), pads=pads,
                          fold=fold, has_bias=bias is not None, dtype=dtype, xc=xc, keep=keep)
    return y.transpose(0, 3, 1, 2)


def conv2d_backward(dy, kernel, ws, need_dx=True):
    """``(dkernel, dbias, dx)`` for ``dy`` (N, F, OH, OW) after a training forward with ``ws``;
    ``dbias`` is None without a bias, ``dx`` None when not ``need_dx``."""
    saved = ws["conv"]
    n, c, h, w, f, kh, kw, oh, ow = saved["shape"]
    (sh, sw), (top, bottom, left, right) = saved["strides"], saved["pads"]
    fold, has_bias, dtype, xc, keep = (saved[key] for key in ("fold", "has_bias", "dtype", "xc", "keep"))
    k, kf = kh * kw * c, kh * kw * f
    image_bytes = oh * ow * (k + fold) * dtype.itemsize
    nt = _nthreads(n * image_bytes)
    nb = _per_chunk(n, nt, CHUNK_BYTES, image_bytes)

    dyt = dy.transpose(0, 2, 3, 1)
    dy_cl = dyt if dyt.flags.c_contiguous and dyt.dtype == dtype else _buf(ws, "dy", (n, oh, ow, f), dtype)
    patches = _patches(ws["xp"][:n], oh, ow, kh, kw, sh, sw)
    cols_all = ws["cols_all"][:n * oh * ow] if keep else None
    flip = need_dx and _flip_ok(kh, kw, (sh, sw), (top, bottom, left, right))
    # With the flip, one im2col of the padded dL/dy serves dX = dcols @ flip(W)^T and, when
    # the forward kept the channel-last input, dW(flipped) = X^T @ dcols: no X-side im2col.
    dw_from_dy = flip and xc is not None
    db_gemv = has_bias and (dw_from_dy or not fold)   # else db is the GEMM's ones-column row
    if flip:
        qt, ql = kh - 1 - top, kw - 1 - left
        dyp = _buf(ws, "dyp", (n, h + kh - 1, w + kw - 1, f), dtype, zero=True)
        dpatches = _patches(dyp, h, w, kh, kw, 1, 1)
        wf = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(2, 3, 0, 1), dtype=dtype).reshape(kf, c)
        dx_cl = _buf(ws, "dx", (n, h, w, c), dtype)
    elif need_dx:
        dxp = _buf(ws, "dxp", (n, h + top + bottom, w + left + right, c), dtype)
        w2 = np.ascontiguousarray(kernel.transpose(0, 2, 3, 1), dtype=dtype).reshape(f, k)
        nb = _per_chunk(n, nt, COL2IM_CHUNK_BYTES, image_bytes)
    ones = np.ones(nb * oh * ow, dtype) if db_gemv else None

    def work(chunks, t):
        # acc: dW as (c, (i', j', f)) from X^T @ dcols, or dW^T (+ the db row) from cols^T @ dY
        acc = np.zeros((c, kf) if dw_from_dy else (k + fold, f), dtype)
        tmp = np.empty_like(acc)
        db = np.zeros(f, dtype) if db_gemv else None
        part = None if keep or dw_from_dy else _cols_buf(ws, ("cols", t), nb * oh * ow, k, fold, dtype)
        if need_dx:
            dcols = _buf(ws, ("dcols", t), (nb, h, w, kh, kw, f) if flip else (nb, oh, ow, kh, kw, c), dtype)
        for n0, n1 in chunks:
            m = (n1 - n0) * oh * ow
            if dy_cl is not dyt:
                dy_cl[n0:n1] = dyt[n0:n1]
            dyc = dy_cl[n0:n1].reshape(m, f)
            if db is not None:
                db += ones[:m] @ dyc
            if flip:
                dyp[n0:n1, qt:qt + oh, ql:ql + ow] = dy_cl[n0:n1]
                d = dcols[:n1 - n0]
                np.copyto(d, dpatches[n0:n1])
                d = d.reshape(-1, kf)
                np.matmul(d, wf, out=dx_cl[n0:n1].reshape(-1, c))
                if dw_from_dy:
                    np.matmul(xc[n0:n1].reshape(-1, c).T, d, out=tmp)
                    acc += tmp
                    continue
            if keep:
                cols = cols_all[n0 * oh * ow:n1 * oh * ow]
            else:   # recomputing the im2col is cheaper than keeping a DRAM-sized one
                cols = part[:m]
                np.copyto(cols[:, :k].reshape(n1 - n0, oh, ow, kh, kw, c), patches[n0:n1])
            np.matmul(cols.T, dyc, out=tmp)
            acc += tmp
            if need_dx and not flip:
                d = dcols[:n1 - n0]
                np.matmul(dyc, w2, out=d.reshape(m, k))
                dxc = dxp[n0:n1]
                dxc.fill(0)
                for i in range(kh):      # col2im: one strided slice per kernel offset
                    for j in range(kw):
                        view = dxc[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                        view += d[:, :, :, i, j]
        return acc, db

    results = threads.run_parts(work, _chunks(n, nb, nt))
    acc = results[0][0]
    for r in results[1:]:
        acc += r[0]
    if dw_from_dy:   # acc[c, (i', j', f)] = dW[f, c, kh-1-i', kw-1-j']
        dkernel = acc.reshape(c, kh, kw, f)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2)
    else:
        dkernel = acc[:k].reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
    dbias = None
    if has_bias:
        dbias = sum(r[1] for r in results) if db_gemv else acc[k]
    dx = None
    if need_dx:
        dx = (dx_cl if flip else dxp[:, top:top + h, left:left + w]).transpose(0, 3, 1, 2)
    return dkernel, dbias, dx


# ---- pooling -------------------------------------------------------------------------------
def _axis_plan(size, k, s, pad, out):
    """How the windows along one axis read it: per kernel offset ``(o0, o1, r0, first)`` says
    outputs ``o0:o1`` read cells ``r0, r0 + s, ...`` and whether no earlier offset read any of
    them (so the backward pass writes rather than adds). Also the cells no first-reading offset
    writes (zeroed before the backward pass adds into them) and each window's real-cell count."""
    plan, touched, written = [], np.zeros(size, bool), np.zeros(size, bool)
    for i in range(k):
        o0 = max(0, -(-(pad - i) // s))
        o1 = min(out, (size - 1 + pad - i) // s + 1)
        if o1 <= o0:
            continue
        r0 = o0 * s - pad + i
        cells = np.arange(r0, r0 + (o1 - o0 - 1) * s + 1, s)
        first = not touched[cells].any()
        touched[cells] = True
        written[cells] |= first
        plan.append((o0, o1, r0, first))
    starts = np.arange(out) * s - pad
    counts = np.minimum(starts + k, size) - np.maximum(starts, 0)
    return plan, np.nonzero(~written)[0], counts


def _pool_plan(ws, shape, pool, strides, pads, dtype):
    """``(rows plan, rows to zero, cols plan, cols to zero, 1 / window sizes)``, cached in ws."""
    key = (tuple(shape[1:]), tuple(pool), tuple(strides), tuple(pads), dtype)
    if ws.get("plan_key") != key:
        _, _, h, w = shape
        top, bottom, left, right = pads
        oh = (h + top + bottom - pool[0]) // strides[0] + 1
        ow = (w + left + right - pool[1]) // strides[1] + 1
        rows, zero_rows, count_h = _axis_plan(h, pool[0], strides[0], top, oh)
        cols, zero_cols, count_w = _axis_plan(w, pool[1], strides[1], left, ow)
        ws["plan"] = (rows, zero_rows, cols, zero_cols, (1.0 / np.outer(count_h, count_w)).astype(dtype))
        ws["plan_key"] = key
    return ws["plan"]


def _at(axis, index):
    t = [slice(None)] * 4
    t[axis] = index
    return tuple(t)


def _every(r0, n, s):
    return slice(r0, r0 + (n - 1) * s + 1, s)


def _reduce_axis(x, y, axis, plan, s, op):
    """``y = op`` over the window offsets along ``axis`` (op: np.maximum or np.add)."""
    o0, o1, r0, _ = plan[0]
    if o0 == 0 and o1 == y.shape[axis]:
        np.copyto(y, x[_at(axis, _every(r0, o1, s))])
        rest = plan[1:]
    else:
        y.fill(-np.inf if op is np.maximum else 0)
        rest = plan
    for o0, o1, r0, _ in rest:
        yo = y[_at(axis, slice(o0, o1))]
        op(yo, x[_at(axis, _every(r0, o1 - o0, s))], out=yo)


def _route_axis(dx, dy, axis, plan, zero, s, x=None, y=None, eq=None, taken=None, tmp=None):
    """Backward of ``_reduce_axis``. Sums: ``dx[cells] += dy``. Maxima (``x``, ``y`` given):
    each output's gradient goes to the first offset whose input equals it, and only there."""
    if len(zero):
        dx[_at(axis, zero)] = 0
    if x is not None:
        taken.fill(False)
    for t, (o0, o1, r0, first) in enumerate(plan):
        o = _at(axis, slice(o0, o1))
        cells = _at(axis, _every(r0, o1 - o0, s))
        dv = dx[cells]
        if x is None:
            if first:
                np.copyto(dv, dy[o])
            else:
                dv += dy[o]
            continue
        e, tk = eq[o], taken[o]
        np.equal(x[cells], y[o], out=e)
        if t > 0:
            np.greater(e, tk, out=e)        # e &= ~taken
        if t < len(plan) - 1:
            np.logical_or(tk, e, out=tk)    # taken |= e
        if first:
            np.multiply(dy[o], e, out=dv)
        else:
            to = tmp[o]
            np.multiply(dy[o], e, out=to)
            dv += to


def _pool_input(x):
    dtype = np.result_type(x.dtype, np.float32)
    return x if x.dtype == dtype else x.astype(dtype)


def _pool_chunk(shape, itemsize, nbytes):
    """Images per pooling work item (the whole batch when it is small)."""
    if nbytes < SMALL_BYTES:
        return shape[0]
    return int(min(shape[0], max(1, POOL_CHUNK_BYTES // (int(np.prod(shape[1:])) * itemsize))))


def _split(fn, n, nb):
    """``fn(batch slice, thread index)`` over chunks of ``nb`` images spread over the threads."""
    if nb >= n:
        fn(slice(0, n), 0)
        return

    def run(chunks, t):
        for n0, n1 in chunks:
            fn(slice(n0, n1), t)

    threads.run_parts(run, _chunks(n, nb, threads.get_num_threads()))


def max_pool_forward(x, pool, strides, pads, ws=None):
    """Maximum over each ``pool`` window. ``ws``: the layer's workspace (training) or None."""
    train = ws is not None
    ws = ws if train else {}
    x = _pool_input(x)
    rows, _, cols, _, inv = _pool_plan(ws, x.shape, pool, strides, pads, x.dtype)
    n, c, h, w = x.shape
    oh, ow = inv.shape
    cl = _is_channel_last(x)
    # Columns first, then rows: the backward pass then picks the first row holding the
    # maximum, then the first column in that row, which is the row-major first maximum.
    hw = _like(ws, "hw", cl, (n, c, h, ow), x.dtype)
    y = _like(ws, "y", cl, (n, c, oh, ow), x.dtype)

    def fn(b, t):
        _reduce_axis(x[b], hw[b], 3, cols, strides[1], np.maximum)
        _reduce_axis(hw[b], y[b], 2, rows, strides[0], np.maximum)

    _split(fn, n, _pool_chunk(x.shape, x.itemsize, x.nbytes))
    if train:
        ws["max"] = (x, hw, y, strides)
    return y


def max_pool_backward(dy, ws):
    """dL/dx for ``dy`` after a training forward with ``ws``: each window's gradient goes to
    its row-major first maximum."""
    x, hw, y, strides = ws["max"]
    rows, zero_rows, cols, zero_cols, _ = ws["plan"]
    n = x.shape[0]
    cl = _is_channel_last(x)
    if _is_channel_last(dy) != cl:
        # One layout-changing copy (a Flatten's NCHW gradient) is much cheaper than
        # mixed-layout arithmetic in every pass below.
        dy_like = _like(ws, "dy", cl, dy.shape, x.dtype)
        np.copyto(dy_like, dy)
        dy = dy_like
    dx = _like(ws, "dx", cl, x.shape, x.dtype)
    nb = _pool_chunk(x.shape, x.itemsize, x.nbytes)
    temps = [[_like(ws, (name, t), cl, (nb,) + ref.shape[1:], dtype) for name, ref, dtype in
              (("dhw", hw, x.dtype), ("eq_y", y, bool), ("taken_y", y, bool), ("tmp_y", y, x.dtype),
               ("eq_hw", hw, bool), ("taken_hw", hw, bool), ("tmp_hw", hw, x.dtype))]
             for t in range(1 if nb >= n else threads.get_num_threads())]

    def fn(b, t):
        m = b.stop - b.start
        dhw, e1, t1, m1, e2, t2, m2 = (a[:m] for a in temps[t])
        _route_axis(dhw, dy[b], 2, rows, zero_rows, strides[0], hw[b], y[b], e1, t1, m1)
        _route_axis(dx[b], dhw, 3, cols, zero_cols, strides[1], x[b], hw[b], e2, t2, m2)

    _split(fn, n, nb)
    return dx


def avg_pool_forward(x, pool, strides, pads, ws=None):
    """Mean over the real (unpadded) cells of each ``pool`` window. ``ws`` as for max pooling."""
    train = ws is not None
    ws = ws if train else {}
    x = _pool_input(x)
    rows, _, cols, _, inv = _pool_plan(ws, x.shape, pool, strides, pads, x.dtype)
    n, c, h, w = x.shape
    oh, ow = inv.shape
    cl = _is_channel_last(x)
    y = _like(ws, "y", cl, (n, c, oh, ow), x.dtype)
    nb = _pool_chunk(x.shape, x.itemsize, x.nbytes)
    # Rows first: in channel-last memory a row pass reads long contiguous runs, and the
    # narrower column pass then works on the smaller array.
    temps = [_like(ws, ("hv", t), cl, (nb, c, oh, w), x.dtype)
             for t in range(1 if nb >= n else threads.get_num_threads())]

    def fn(b, t):
        hv = temps[t][:b.stop - b.start]
        _reduce_axis(x[b], hv, 2, rows, strides[0], np.add)
        _reduce_axis(hv, y[b], 3, cols, strides[1], np.add)
        y[b] *= inv

    _split(fn, n, nb)
    if train:
        ws["avg"] = (x.shape, x.dtype, cl, strides)
    return y


def avg_pool_backward(dy, ws):
    """dL/dx for ``dy`` after a training forward with ``ws``."""
    shape, dtype, cl, strides = ws["avg"]
    rows, zero_rows, cols, zero_cols, inv = ws["plan"]
    n, c, h, w = shape
    oh, ow = inv.shape
    dx = _like(ws, "dx", cl, shape, dtype)
    nb = _pool_chunk(shape, dtype.itemsize, n * c * h * w * dtype.itemsize)
    temps = [(_like(ws, ("g", t), cl, (nb, c, oh, ow), dtype),
              _like(ws, ("dhv", t), cl, (nb, c, oh, w), dtype))
             for t in range(1 if nb >= n else threads.get_num_threads())]

    def fn(b, t):
        m = b.stop - b.start
        g, dhv = temps[t][0][:m], temps[t][1][:m]
        np.multiply(dy[b], inv, out=g)
        _route_axis(dhv, g, 3, cols, zero_cols, strides[1])
        _route_axis(dx[b], dhv, 2, rows, zero_rows, strides[0])

    _split(fn, n, nb)
    return dx
