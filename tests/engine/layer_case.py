"""The shared layer case (Chainer's ``FunctionTestCase``, tinygrad's ``helper_test_op``) and the
references layer tests compare with.

A ``LayerCase`` declares a layer once: how to make it, its input shape, a NumPy reference of
its forward pass and, optionally, the same computation in PyTorch. From that declaration

- ``check_forward()`` compares the float64 forward pass with the reference,
- ``check_gradients()`` compares ``backward`` with float64 central differences of
  ``f = sum(forward(x) * G)`` (random upstream gradient ``G``) w.r.t. every input and param,
- ``check_torch()`` runs the layer in float32 against ``torch_fn`` under autograd (forward,
  dL/dx and every param gradient; skipped without torch),
- ``check()`` runs all three,

so a new layer is tested in a few lines::

    def test_scale_layer():
        LayerCase(lambda: Scale(), (4,), reference=lambda x, p: x * p["w"],
                  torch_fn=lambda x, p: x * p["w"]).check()

Layers run in float64 for the first two: a standalone layer keeps the dtype of its input, so
once its params are redrawn in float64 the analytic gradients can be held to tight tolerances.
Inputs can be kept away from kinks (ReLU at 0: ``kink=True``) and ties (max pooling:
``inputs=distinct_values``), as Chainer's ``check_backward`` advises.

The references below (same-padding geometry, convolution and pooling) are written from the
definitions, independently of ``sparkdl.engine.conv_ops``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tests.helpers import softmax

EPS = 1e-6
KINK = 1e-3   # pre-activations are kept at least this far from the ReLU kink at 0


def numeric_grad(f, a: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central difference of the scalar ``f()`` w.r.t. every entry of ``a`` (perturbed in place)."""
    assert a.flags.c_contiguous and a.dtype == np.float64
    flat = a.reshape(-1)
    grad = np.zeros(a.size, dtype=np.float64)
    for i in range(a.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = f()
        flat[i] = orig - eps
        fm = f()
        flat[i] = orig
        grad[i] = (fp - fm) / (2 * eps)
    return grad.reshape(a.shape)


def away_from_zero(x: np.ndarray, margin: float = KINK) -> np.ndarray:
    """Push entries with ``|x| < margin`` out to ``±2 * margin`` (keeps the sign)."""
    x = x.copy()
    small = np.abs(x) < margin
    x[small] = np.where(x[small] >= 0, 2 * margin, -2 * margin)
    return x


def distinct_values(shape, rng, step=0.1, dtype=np.float64):
    """Values ``step`` apart in random order: every pooling window has a unique maximum that a
    1e-6 perturbation (or float32 rounding) cannot change."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * step - 2.0).astype(dtype)


def _copy(x):
    return [a.copy() for a in x] if isinstance(x, list) else x.copy()


@dataclass
class LayerCase:
    """One layer under test; see the module docstring.

    ``reference(x, params)`` and ``torch_fn(xt, pt)`` receive the input (a list for layers with
    several inputs) and the layer's params as a dict (NumPy float64 arrays, or torch tensors
    that require grad) and return the layer's output.
    """
    make: Callable
    input_shape: tuple | list            # without the batch axis; a list of shapes for merge layers
    reference: Callable | None = None
    torch_fn: Callable | None = None
    batch: int = 2
    inputs: Callable | None = None       # inputs(shape, rng) -> one input array (default: normal)
    params: Callable | None = None       # params(name, shape, rng) -> float64 values (default: normal)
    scale: float = 0.5                   # std of the default params
    output_shape: tuple | None = None    # expected, without the batch axis
    logits: bool = False                 # check forward_logits / backward_logits instead
    kink: bool = False                   # redraw inputs until every pre-activation avoids 0
    mask_seed: int | None = None         # stochastic layers: the same mask in every forward pass
    training_forward: bool = False       # check_forward in training mode
    input_grad: bool = True              # False for id inputs: backward returns None
    seed: int = 0
    forward_rtol: float = 1e-12
    forward_atol: float = 1e-12
    rtol: float = 1e-5
    atol: float = 1e-6
    torch_rtol: float = 1e-5
    torch_atol: float = 1e-6

    # ---- set-up -------------------------------------------------------------------------------
    @property
    def _multi(self) -> bool:
        return isinstance(self.input_shape, list)

    def _draw(self, rng):
        shapes = self.input_shape if self._multi else [self.input_shape]
        draw = self.inputs or (lambda shape, r: r.normal(size=shape))
        xs = [np.ascontiguousarray(draw((self.batch,) + tuple(s), rng)) for s in shapes]
        return xs if self._multi else xs[0]

    def build(self, rng):
        """``(layer, x)``: the layer built for the case's input and holding float64 params drawn
        from ``rng``, and an input drawn from ``rng`` (away from kinks when asked)."""
        layer = self.make()
        x = self._draw(rng)
        layer(x[:1] if not self._multi else [a[:1] for a in x])
        for k in list(layer.params):
            shape = layer.params[k].shape
            value = self.params(k, shape, rng) if self.params else rng.normal(0.0, self.scale, size=shape)
            layer.params[k] = np.ascontiguousarray(value, dtype=np.float64)
            layer.grads[k] = np.zeros_like(layer.params[k])
        if self.kink:
            x = self._away_from_kink(layer, x, rng)
        return layer, x

    def _away_from_kink(self, layer, x, rng):
        pre = getattr(layer, "forward_logits", None) or (lambda inp, training=False: inp)
        for _ in range(200):
            if np.min(np.abs(pre(x))) > KINK:
                return x
            x = self._draw(rng)
        raise AssertionError("could not draw inputs away from the kink at 0")

    def _run(self, layer, x, training):
        if self.mask_seed is not None:
            layer.rng = np.random.default_rng(self.mask_seed)
        forward = layer.forward_logits if self.logits else layer.forward
        return forward(x, training=training)

    # ---- the checks -------------------------------------------------------------------------
    def check_forward(self):
        """The float64 forward pass equals ``reference``, has ``output_shape`` and leaves its
        input untouched; returns ``(layer, x, y)``."""
        layer, x = self.build(np.random.default_rng(self.seed))
        before = _copy(x)
        y = self._run(layer, x, self.training_forward)
        assert y.dtype == np.float64, "layer must keep a float64 input in float64"
        if self.output_shape is not None:
            assert layer.output_shape == tuple(self.output_shape)
            assert y.shape == (self.batch,) + tuple(self.output_shape)
        if self.reference is not None:
            params = {k: v.copy() for k, v in layer.params.items()}
            np.testing.assert_allclose(y, self.reference(_copy(before), params),
                                       rtol=self.forward_rtol, atol=self.forward_atol)
        for a, b in zip(x if self._multi else [x], before if self._multi else [before]):
            np.testing.assert_array_equal(a, b, err_msg="forward must not overwrite its input")
        return layer, x, y

    def check_gradients(self):
        """``backward`` equals float64 central differences w.r.t. the input(s) and every param;
        returns ``(dx, {param: gradient})``."""
        rng = np.random.default_rng(self.seed)
        layer, x = self.build(rng)
        backward = layer.backward_logits if self.logits else layer.backward
        y = self._run(layer, _copy(x), True)
        assert y.dtype == np.float64, "layer must keep a float64 input in float64"
        G = rng.normal(size=y.shape)
        dx = backward(G.copy())
        analytic = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
        assert set(analytic) == set(layer.params)

        def f(inp):
            return lambda: float(np.sum(self._run(layer, inp, True) * G))
        if not self.input_grad:
            assert dx is None, "inputs without a gradient: backward returns None"
        elif self._multi:
            assert len(dx) == len(x)
            for i in range(len(x)):
                xp = _copy(x)
                assert dx[i].shape == x[i].shape
                np.testing.assert_allclose(dx[i], numeric_grad(f(xp), xp[i]), rtol=self.rtol,
                                           atol=self.atol, err_msg=f"dL/dx[{i}]")
        else:
            assert dx is not None and dx.shape == x.shape
            xp = x.copy()
            np.testing.assert_allclose(dx, numeric_grad(f(xp), xp), rtol=self.rtol, atol=self.atol,
                                       err_msg="dL/dx")
        for k, p in layer.params.items():
            num = numeric_grad(lambda: f(_copy(x))(), p)
            np.testing.assert_allclose(analytic[k], num, rtol=self.rtol, atol=self.atol, err_msg=f"dL/d{k}")
        return dx, analytic

    def check_torch(self):
        """Forward and backward in float32 against ``torch_fn`` under torch autograd."""
        torch = pytest.importorskip("torch")
        assert self.torch_fn is not None, "the case has no torch_fn"
        assert self.mask_seed is None, "stochastic layers have no torch parity check"
        rng = np.random.default_rng(self.seed)
        layer, x = self.build(rng)
        for k in layer.params:
            layer.params[k] = layer.params[k].astype(np.float32)
            layer.grads[k] = np.zeros_like(layer.params[k])
        xs = x if self._multi else [x]
        xs = [a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a for a in xs]
        inp = xs if self._multi else xs[0]
        y = self._run(layer, _copy(inp), True)
        assert y.dtype == np.float32
        G = rng.normal(size=y.shape).astype(np.float32)
        backward = layer.backward_logits if self.logits else layer.backward
        dx = backward(G.copy())

        xt = [torch.tensor(a, requires_grad=self.input_grad) if self.input_grad else torch.tensor(a)
              for a in xs]
        pt = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
        yt = self.torch_fn(xt if self._multi else xt[0], pt)
        yt.backward(torch.tensor(G))
        tol = {"rtol": self.torch_rtol, "atol": self.torch_atol}
        assert_close(y, yt, msg="forward", **tol)
        if self.input_grad:
            for i, (d, t) in enumerate(zip(dx if self._multi else [dx], xt)):
                assert_close(d, t.grad, msg=f"dL/dx[{i}]", **tol)
        for k in layer.params:
            assert_close(layer.grads[k], pt[k].grad, msg=f"dL/d{k}", **tol)

    def check(self):
        """All of the above (the torch check only with a ``torch_fn`` and torch installed)."""
        self.check_forward()
        self.check_gradients()
        if self.torch_fn is not None:
            try:
                import torch  # noqa: F401
            except ImportError:
                return
            self.check_torch()


# ---- PyTorch ---------------------------------------------------------------------------------
def to_torch(a, grad=False):
    """A float32 torch tensor of ``a`` (requiring grad when asked)."""
    import torch
    return torch.tensor(np.asarray(a, dtype=np.float32), requires_grad=grad)


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=""):
    """``assert_allclose`` that takes torch tensors as the expected values."""
    if hasattr(expected, "detach"):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol, err_msg=msg)


def torch_same_pad(xt, kernel, strides, padding, value=0.0):
    """``xt`` (NCHW) padded explicitly by the Keras 'same' rule for torch's unpadded ops."""
    import torch
    if padding == "valid":
        return xt
    _, top, bottom = same_geometry(xt.shape[2], kernel[0], strides[0])
    _, left, right = same_geometry(xt.shape[3], kernel[1], strides[1])
    return torch.nn.functional.pad(xt, (left, right, top, bottom), value=value)


# ---- convolution and pooling, from their definitions -----------------------------------------
def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def same_geometry(n, k, s):
    """Keras 'same' along one axis, written out independently: ``(out, before, after)`` with
    ``out = ceil(n / s)`` and the odd cell of padding at the end."""
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def geometry(h, w, kernel, strides, padding):
    """``((top, bottom, left, right), (out_h, out_w))`` of a conv or pooling window."""
    if padding == "valid":
        return (0, 0, 0, 0), ((h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1)
    oh, top, bottom = same_geometry(h, kernel[0], strides[0])
    ow, left, right = same_geometry(w, kernel[1], strides[1])
    return (top, bottom, left, right), (oh, ow)


def windows(x, kernel, strides, padding, fill=0.0):
    """``(N, C, OH, OW, kh, kw)`` windows of an NCHW array padded with ``fill``."""
    (top, bottom, left, right), out = geometry(x.shape[2], x.shape[3], kernel, strides, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    v = sliding_window_view(xp, kernel, axis=(2, 3))[:, :, ::strides[0], ::strides[1]]
    return v[:, :, :out[0], :out[1]]


def _scatter(shares, x_shape, kernel, strides, padding):
    """dL/dx from per-offset shares ``shares[i][j]`` (N, C, OH, OW) of each window cell."""
    (top, bottom, left, right), out = geometry(x_shape[2], x_shape[3], kernel, strides, padding)
    dxp = np.zeros(x_shape[:2] + (x_shape[2] + top + bottom, x_shape[3] + left + right))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + strides[0] * (out[0] - 1) + 1, strides[0])
            cols = slice(j, j + strides[1] * (out[1] - 1) + 1, strides[1])
            dxp[:, :, rows, cols] += shares[i][j]
    return dxp[:, :, top:top + x_shape[2], left:left + x_shape[3]]


def ref_conv(x, kernel, bias, strides, padding):
    """Cross-correlation of NCHW ``x`` with an (F, C, kh, kw) ``kernel`` plus ``bias``."""
    y = np.einsum("ncyxij,fcij->nfyx", windows(x, kernel.shape[2:], pair(strides), padding), kernel)
    return y if bias is None else y + bias[None, :, None, None]


def ref_conv_backward(x, kernel, strides, padding, dy):
    """``(dkernel, dbias, dx)`` of ``ref_conv`` for the upstream gradient ``dy``."""
    strides, k = pair(strides), kernel.shape[2:]
    dkernel = np.einsum("ncyxij,nfyx->fcij", windows(x, k, strides, padding), dy)
    shares = [[np.einsum("nfyx,fc->ncyx", dy, kernel[:, :, i, j]) for j in range(k[1])] for i in range(k[0])]
    return dkernel, dy.sum(axis=(0, 2, 3)), _scatter(shares, x.shape, k, strides, padding)


def ref_pool(x, pool, strides, padding, kind):
    """Max or average pooling; padding never wins a maximum and is not counted in an average."""
    pool, strides = pair(pool), pair(strides)
    if kind == "max":
        return windows(x, pool, strides, padding, fill=-np.inf).max(axis=(4, 5))
    counts = windows(np.ones((1, 1) + x.shape[2:]), pool, strides, padding).sum(axis=(4, 5))
    return windows(x, pool, strides, padding).sum(axis=(4, 5)) / counts


def ref_pool_backward(x, pool, strides, padding, kind, dy):
    """dL/dx of ``ref_pool``: for max, each window's gradient to its row-major first maximum
    (``np.argmax`` order); for avg, spread over the window's real cells."""
    pool, strides = pair(pool), pair(strides)
    kh, kw = pool
    if kind == "max":
        win = windows(x, pool, strides, padding, fill=-np.inf)
        first = win.reshape(win.shape[:4] + (kh * kw,)).argmax(axis=-1)
        shares = [[np.where(first == i * kw + j, dy, 0.0) for j in range(kw)] for i in range(kh)]
    else:
        counts = windows(np.ones((1, 1) + x.shape[2:]), pool, strides, padding).sum(axis=(4, 5))
        shares = [[dy / counts] * kw for _ in range(kh)]
    return _scatter(shares, x.shape, pool, strides, padding)


def float64_layer(layer, input_shape, rng, scale=0.5):
    """``layer`` built for ``input_shape`` (no batch axis) with random float64 params."""
    layer(np.zeros((1,) + tuple(input_shape), dtype=np.float32))
    for k in list(layer.params):
        layer.params[k] = np.ascontiguousarray(rng.normal(0.0, scale, size=layer.params[k].shape))
        layer.grads[k] = np.zeros_like(layer.params[k])
    return layer


# ---- activations -----------------------------------------------------------------------------
#: NumPy references of the activations (leaky_relu with sparkdl's default alpha 0.01)
NUMPY_ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "softmax": softmax,
}


def torch_activation(name):
    """The torch function of activation ``name`` (torch imported on demand)."""
    import torch
    F = torch.nn.functional
    return {"linear": lambda z: z, "relu": F.relu, "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
            "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "softmax": lambda z: torch.softmax(z, dim=-1)}[name]
