"""Conv2D, MaxPool2D, AvgPool2D and BatchNorm: float64 central-difference gradient checks and
forward passes against direct loop implementations written here.

Layers run in float64: a standalone layer keeps the dtype of its input, so after casting its
params and grads to float64 the analytic backward pass is compared with a central difference
of ``f = sum(forward(x) * G)`` (random upstream gradient ``G``) at tight tolerances. The
reference forward passes below loop over output positions and pad by the Keras/TensorFlow
'same' rule (``out = ceil(n / s)``, total padding split with the extra cell at the end), so
they check the geometry independently of the library's implementation.
"""
from __future__ import annotations

import numpy as np
from tests.engine.layer_case import numeric_grad
import pytest

from sparkdl import layers

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-6


# ---- helpers --------------------------------------------------------------------------------


def build_float64(layer, input_shape, rng, scale=0.5):
    """Build ``layer`` for ``input_shape`` (no batch axis) and give it random float64 params."""
    layer(np.zeros((1,) + tuple(input_shape), dtype=np.float32))
    for k in list(layer.params):
        layer.params[k] = np.ascontiguousarray(rng.normal(0.0, scale, size=layer.params[k].shape))
        layer.grads[k] = np.zeros_like(layer.params[k])
    return layer


def check_layer(layer, x, *, logits=False, rng=None):
    """Gradient-check ``layer`` at float64 ``x`` w.r.t. ``x`` and every param; returns dx."""
    rng = rng or np.random.default_rng(1234)
    x = np.ascontiguousarray(x, dtype=np.float64)
    forward = layer.forward_logits if logits else layer.forward
    backward = layer.backward_logits if logits else layer.backward

    y = forward(x.copy(), training=True)
    assert y.dtype == np.float64, "layer must keep a float64 input in float64"
    G = rng.normal(size=y.shape)
    dx = backward(G.copy())
    assert dx is not None and dx.shape == x.shape
    analytic = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
    assert set(analytic) == set(layer.params)

    xp = x.copy()
    num_dx = numeric_grad(lambda: float(np.sum(forward(xp, training=True) * G)), xp)
    np.testing.assert_allclose(dx, num_dx, rtol=RTOL, atol=ATOL, err_msg="dL/dx")
    for k, p in layer.params.items():
        num = numeric_grad(lambda: float(np.sum(forward(x.copy(), training=True) * G)), p)
        np.testing.assert_allclose(analytic[k], num, rtol=RTOL, atol=ATOL, err_msg=f"dL/d{k}")
    return dx


def same_geometry(n, k, s):
    """Keras 'same' along one axis, written out independently: (out, before, after)."""
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def pad_for(x, kernel, strides, padding, value=0.0):
    _, _, h, w = x.shape
    if padding == "valid":
        return x, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1
    oh, top, bottom = same_geometry(h, kernel[0], strides[0])
    ow, left, right = same_geometry(w, kernel[1], strides[1])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)
    return xp, oh, ow


def ref_conv(x, kernel, bias, strides, padding):
    f, c, kh, kw = kernel.shape
    xp, oh, ow = pad_for(x, (kh, kw), strides, padding)
    y = np.zeros((x.shape[0], f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw]
            y[:, :, i, j] = np.einsum("nchw,fchw->nf", patch, kernel)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def ref_pool(x, pool, strides, padding, kind):
    kh, kw = pool
    if kind == "max":
        xp, oh, ow = pad_for(x, pool, strides, padding, value=-np.inf)
    else:
        xp, oh, ow = pad_for(x, pool, strides, padding, value=0.0)
        mask, _, _ = pad_for(np.ones_like(x), pool, strides, padding, value=0.0)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * strides[0], i * strides[0] + kh)
            cols = slice(j * strides[1], j * strides[1] + kw)
            if kind == "max":
                y[:, :, i, j] = xp[:, :, rows, cols].max(axis=(2, 3))
            else:
                y[:, :, i, j] = xp[:, :, rows, cols].sum(axis=(2, 3)) / mask[:, :, rows, cols].sum(axis=(2, 3))
    return y


def distinct_values(shape, rng):
    """Values 0.1 apart in random order: every pooling window has a unique maximum that a
    1e-6 perturbation cannot change."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 2.0).astype(np.float64)


# ---- Conv2D ---------------------------------------------------------------------------------
# (input (C, H, W), filters, kernel, strides, padding, expected output (F, OH, OW)); expected
# sizes by hand: valid (n - k) // s + 1, same ceil(n / s).
CONV_CASES = {
    "valid_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "valid", (3, 5, 8)),
    "valid_s2_3x2": ((3, 7, 9), 2, (3, 2), (2, 2), "valid", (2, 3, 4)),
    "same_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "same", (3, 7, 9)),
    "same_s2_3x2": ((2, 7, 9), 2, (3, 2), (2, 2), "same", (2, 4, 5)),
    "same_s2_3x3_even": ((2, 6, 8), 3, (3, 3), (2, 2), "same", (3, 3, 4)),
    "same_s2_4x4_odd": ((1, 7, 9), 2, (4, 4), (2, 2), "same", (2, 4, 5)),
    "same_s21_2x3": ((2, 5, 7), 2, (2, 3), (2, 1), "same", (2, 3, 7)),
    "valid_s12_1x1": ((3, 5, 6), 4, (1, 1), (1, 2), "valid", (4, 5, 3)),
}


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_forward_matches_direct_loop_and_shape(case, use_bias):
    in_shape, filters, kernel, strides, padding, expected = CONV_CASES[case]
    rng = np.random.default_rng(3)
    layer = build_float64(layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                        use_bias=use_bias), in_shape, rng)
    assert layer.output_shape == expected
    assert layer.params["kernel"].shape == (filters, in_shape[0]) + kernel
    assert ("bias" in layer.params) == use_bias
    x = rng.normal(size=(2,) + in_shape)
    x_before = x.copy()
    y = layer.forward(x)
    assert y.shape == (2,) + expected
    np.testing.assert_allclose(y, ref_conv(x, layer.params["kernel"], layer.params.get("bias"),
                                           strides, padding), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_gradients(case, use_bias):
    in_shape, filters, kernel, strides, padding, _ = CONV_CASES[case]
    rng = np.random.default_rng(5)
    layer = build_float64(layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                        use_bias=use_bias), in_shape, rng)
    check_layer(layer, rng.normal(size=(2,) + in_shape), rng=rng)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "softmax"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_gradients_with_activation(activation, padding):
    rng = np.random.default_rng(7)
    layer = build_float64(layers.Conv2D(3, (3, 2), strides=2, padding=padding, activation=activation),
                          (2, 7, 9), rng)
    for _ in range(200):  # keep every pre-activation away from the ReLU kink
        x = rng.normal(size=(2, 2, 7, 9))
        if activation != "relu" or np.min(np.abs(layer.forward_logits(x))) > 1e-3:
            break
    else:
        raise AssertionError("could not draw inputs away from the ReLU kink")
    z = ref_conv(x, layer.params["kernel"], layer.params["bias"], (2, 2), padding)
    expected = {"tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                "relu": lambda v: np.maximum(v, 0),
                "softmax": lambda v: np.exp(v) / np.exp(v).sum(axis=-1, keepdims=True)}[activation](z)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    check_layer(layer, x, rng=rng)


def test_conv2d_logits_path_is_the_linear_part():
    rng = np.random.default_rng(8)
    layer = build_float64(layers.Conv2D(2, 3, padding="same", activation="sigmoid"), (2, 5, 5), rng)
    x = rng.normal(size=(2, 2, 5, 5))
    np.testing.assert_allclose(layer.forward_logits(x),
                               ref_conv(x, layer.params["kernel"], layer.params["bias"], (1, 1), "same"),
                               rtol=1e-12, atol=1e-12)
    check_layer(layer, x, logits=True, rng=rng)


def test_conv2d_grads_are_overwritten_not_accumulated_and_skip_dx():
    rng = np.random.default_rng(9)
    layer = build_float64(layers.Conv2D(2, 3, strides=2, padding="same"), (2, 5, 6), rng)
    x = rng.normal(size=(3, 2, 5, 6))
    G = rng.normal(size=(3, 2, 3, 3))
    layer.forward(x, training=True)
    dx = layer.backward(G)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.backward(G), dx, rtol=1e-12)
    for k in first:
        np.testing.assert_allclose(layer.grads[k], first[k], rtol=1e-12)
    # The bias gradient is the sum of G over batch and positions (hand formula).
    np.testing.assert_allclose(first["bias"], G.sum(axis=(0, 2, 3)), rtol=1e-12)

    layer.needs_input_grad = False
    for g in layer.grads.values():
        g[...] = 0
    layer.forward(x, training=True)
    assert layer.backward(G) is None
    for k in first:
        np.testing.assert_allclose(layer.grads[k], first[k], rtol=1e-12)


# ---- pooling --------------------------------------------------------------------------------
# (input (C, H, W), pool, strides, padding, expected output (C, OH, OW))
POOL_CASES = {
    "p2s2_valid_7x9": ((2, 7, 9), 2, 2, "valid", (2, 3, 4)),
    "p2s2_same_7x9": ((2, 7, 9), 2, 2, "same", (2, 4, 5)),
    "p3s2_valid_7x9": ((2, 7, 9), 3, 2, "valid", (2, 3, 4)),
    "p3s2_same_7x9": ((2, 7, 9), 3, 2, "same", (2, 4, 5)),
    "p3s2_same_8x6": ((1, 8, 6), 3, 2, "same", (1, 4, 3)),
    "p3s1_same_5x5": ((2, 5, 5), 3, 1, "same", (2, 5, 5)),
    "p2x3_s1x2_valid_5x7": ((2, 5, 7), (2, 3), (1, 2), "valid", (2, 4, 3)),
}


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_forward_matches_direct_loop(case, kind):
    in_shape, pool, strides, padding, expected = POOL_CASES[case]
    cls = layers.MaxPool2D if kind == "max" else layers.AvgPool2D
    layer = cls(pool, strides=strides, padding=padding)
    rng = np.random.default_rng(11)
    x = distinct_values((3,) + in_shape, rng)
    y = layer(x)
    assert layer.output_shape == expected
    assert y.shape == (3,) + expected
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    np.testing.assert_allclose(y, ref_pool(x, pair(pool), pair(strides), padding, kind),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_gradients(case, kind):
    in_shape, pool, strides, padding, _ = POOL_CASES[case]
    cls = layers.MaxPool2D if kind == "max" else layers.AvgPool2D
    layer = cls(pool, strides=strides, padding=padding)
    rng = np.random.default_rng(13)
    x = distinct_values((2,) + in_shape, rng)
    layer(x)
    assert not layer.params
    check_layer(layer, x, rng=rng)


def test_max_pool_ties_go_to_first_maximum_in_row_major_order():
    layer = layers.MaxPool2D(2)
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 3.0]]]])
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, [[[[3.0, 3.0]]]])
    dx = layer.backward(np.array([[[[5.0, 7.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 5.0, 7.0, 0.0],
                                         [0.0, 0.0, 0.0, 0.0]]]])


def test_max_pool_overlapping_windows_sum_their_gradients():
    layer = layers.MaxPool2D(3, strides=2)
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 1, 2] = 9.0  # the maximum of both windows (columns 0-2 and 2-4)
    layer(x, training=True)
    dx = layer.backward(np.array([[[[1.0, 2.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 2] = 3.0
    np.testing.assert_array_equal(dx, expected)

    x = np.zeros((1, 1, 3, 5))  # all tied: first cell of each window
    layer(x, training=True)
    dx = layer.backward(np.array([[[[1.0, 2.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0], expected[0, 0, 0, 2] = 1.0, 2.0
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_same_padding_never_wins():
    layer = layers.MaxPool2D(2, padding="same")
    x = np.full((1, 1, 3, 3), -5.0)
    x[0, 0, 2, 2] = -7.0  # the only real cell of the bottom-right window
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, [[[[-5.0, -5.0], [-5.0, -7.0]]]])
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 2, 2] == 1.0
    assert dx.sum() == 4.0


def test_avg_pool_same_excludes_padding_by_hand():
    layer = layers.AvgPool2D(2, padding="same")
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    y = layer(x, training=True)
    np.testing.assert_allclose(y, [[[[2.0, 3.5], [6.5, 8.0]]]], rtol=1e-12)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(dx, [[[[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 1.0]]]],
                               rtol=1e-12)


def test_pool_default_strides_equal_pool_size():
    layer = layers.AvgPool2D(3)
    x = np.arange(2 * 9 * 9, dtype=np.float64).reshape(1, 2, 9, 9)
    y = layer(x)
    assert y.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(y[0, 1, 2, 0], x[0, 1, 6:9, 0:3].mean(), rtol=1e-12)


# ---- BatchNorm ------------------------------------------------------------------------------
def bn_float64(input_shape, rng, momentum=0.9, epsilon=1e-3):
    layer = layers.BatchNorm(momentum=momentum, epsilon=epsilon)
    layer(np.zeros((2,) + tuple(input_shape), dtype=np.float32))
    layer.params["gamma"] = rng.uniform(0.5, 1.5, size=input_shape[0])
    layer.params["beta"] = rng.normal(size=input_shape[0])
    for k in layer.params:
        layer.grads[k] = np.zeros_like(layer.params[k])
    return layer


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4), (4, 3, 1, 5)], ids=["NF", "NCHW", "NC1W"])
def test_batchnorm_training_gradients(shape):
    rng = np.random.default_rng(17)
    layer = bn_float64(shape[1:], rng)
    x = rng.normal(2.0, 3.0, size=shape)
    check_layer(layer, x, rng=rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)], ids=["NF", "NCHW"])
def test_batchnorm_training_forward_and_moving_statistics(shape):
    rng = np.random.default_rng(19)
    layer = bn_float64(shape[1:], rng, momentum=0.9, epsilon=1e-3)
    x = rng.normal(2.0, 3.0, size=shape)
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(bshape)) ** 2).mean(axis=axes)  # biased
    y = layer.forward(x, training=True)
    expected = (layer.params["gamma"].reshape(bshape) * (x - mean.reshape(bshape))
                / np.sqrt(var.reshape(bshape) + 1e-3) + layer.params["beta"].reshape(bshape))
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    # Keras momentum: moving = m * moving + (1 - m) * batch, from the initial 0 and 1.
    np.testing.assert_allclose(layer.state["moving_mean"], 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(layer.state["moving_variance"], 0.9 + 0.1 * var, rtol=1e-6)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.state["moving_mean"], 0.9 * 0.1 * mean + 0.1 * mean, rtol=1e-6)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)], ids=["NF", "NCHW"])
def test_batchnorm_eval_uses_moving_statistics(shape):
    rng = np.random.default_rng(23)
    layer = bn_float64(shape[1:], rng, epsilon=1e-3)
    c = shape[1]
    mm = rng.normal(size=c).astype(np.float32)
    mv = rng.uniform(0.5, 2.0, size=c).astype(np.float32)
    layer.state["moving_mean"][...] = mm
    layer.state["moving_variance"][...] = mv
    x = rng.normal(size=shape)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    y = layer.forward(x, training=False)
    expected = (layer.params["gamma"].reshape(bshape) * (x - mm.astype(np.float64).reshape(bshape))
                / np.sqrt(mv.astype(np.float64).reshape(bshape) + 1e-3) + layer.params["beta"].reshape(bshape))
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(layer.state["moving_mean"], mm)  # eval leaves them alone
    np.testing.assert_array_equal(layer.state["moving_variance"], mv)
    # float32 input stays float32 in eval
    assert layer.forward(x.astype(np.float32), training=False).dtype == np.float32


def test_batchnorm_eval_is_affine_in_x_with_the_moving_scale():
    """In eval, dy/dx per channel is gamma / sqrt(moving_variance + eps) (central difference)."""
    rng = np.random.default_rng(29)
    layer = bn_float64((3,), rng, epsilon=1e-3)
    layer.state["moving_variance"][...] = [0.5, 2.0, 4.0]
    layer.state["moving_mean"][...] = [1.0, -1.0, 0.0]
    x = rng.normal(size=(4, 3))
    G = rng.normal(size=(4, 3))
    xp = x.copy()
    num = numeric_grad(lambda: float(np.sum(layer.forward(xp, training=False) * G)), xp)
    scale = layer.params["gamma"] / np.sqrt(np.array([0.5, 2.0, 4.0]) + 1e-3)
    np.testing.assert_allclose(num, G * scale, rtol=1e-6)
