"""The fast convolution and pooling paths of ``conv_ops`` at sizes where they chunk the batch
and split it over two threads, in float64 against the direct references of layer_case.py;
max-pool tie-breaking; and the aliasing rule of the layer workspaces (training outputs live in
the layer's workspace, inference outputs are fresh arrays, workspaces are never pickled).

The layer tests in layers/test_conv.py use small inputs, which run in one thread and one
chunk; these cover the flipped-kernel backward (with dW from either side), col2im, kept and
recomputed im2col, bias folded into the GEMM or not, and channel-last or NCHW memory.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.engine import conv_ops, threads
from sparkdl.models import Input, Sequential
from tests.engine.layer_case import geometry, ref_conv, ref_conv_backward, ref_pool, ref_pool_backward


@pytest.fixture(autouse=True)
def _two_threads():
    budget = threads._budget
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(budget)


def channel_last(a):
    """The same NCHW-shaped values in channel-last memory (what conv/pool outputs are)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# (N, C, H, W, F, kernel, strides, padding): the path each one takes is in its name
CONV_PATHS = {
    "flip_dw_from_dy": (40, 8, 12, 12, 8, (3, 3), (1, 1), "same"),
    "flip_dw_from_x_recomputed_cols": (40, 8, 12, 12, 20, (5, 5), (1, 1), "same"),
    "flip_dw_from_x_kept_cols_bias_gemv": (24, 8, 10, 10, 20, (5, 5), (1, 1), "same"),
    "col2im_valid_recomputed_cols": (120, 6, 14, 14, 10, (5, 5), (1, 1), "valid"),
    "col2im_valid_kept_cols": (40, 6, 14, 14, 10, (5, 5), (1, 1), "valid"),
    "col2im_stride2_same": (40, 6, 15, 13, 10, (3, 3), (2, 2), "same"),
    "col2im_stride21_rect": (40, 5, 14, 12, 7, (3, 2), (2, 1), "same"),
    "col2im_even_kernel_same": (40, 6, 12, 12, 6, (4, 4), (1, 1), "same"),
}


@pytest.mark.parametrize("layout", ["nchw", "channel_last"])
@pytest.mark.parametrize("case", list(CONV_PATHS))
def test_conv_paths_match_reference_in_float64(case, layout):
    n, c, h, w, f, k, s, padding = CONV_PATHS[case]
    rng = np.random.default_rng(0)
    pads, out = geometry(h, w, k, s, padding)
    x = rng.normal(size=(n, c, h, w))
    kernel, bias = rng.normal(size=(f, c) + k), rng.normal(size=f)
    dy = rng.normal(size=(n, f) + out)
    if layout == "channel_last":
        x, dy = channel_last(x), channel_last(dy)
    y_ref = ref_conv(x, kernel, bias, s, padding)
    dk_ref, db_ref, dx_ref = ref_conv_backward(x, kernel, s, padding, dy)
    ws = {}
    for _ in range(2):  # the second step reuses the workspace
        y = conv_ops.conv2d_forward(x, kernel, bias, s, pads, ws)
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-10)
        dk, db, dx = conv_ops.conv2d_backward(dy, kernel, ws)
        np.testing.assert_allclose(dk, dk_ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-10)
    # A smaller last batch reuses the same buffers.
    y_ref = ref_conv(x[:7], kernel, bias, s, padding)
    dk_ref, _, dx_ref = ref_conv_backward(x[:7], kernel, s, padding, dy[:7])
    y = conv_ops.conv2d_forward(x[:7], kernel, bias, s, pads, ws)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-10)
    dk, _, dx = conv_ops.conv2d_backward(dy[:7], kernel, ws)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-10)


def test_conv_without_bias_or_input_gradient():
    n, c, h, w, f, k, s, padding = CONV_PATHS["flip_dw_from_x_kept_cols_bias_gemv"]
    rng = np.random.default_rng(1)
    pads, out = geometry(h, w, k, s, padding)
    x, kernel, dy = rng.normal(size=(n, c, h, w)), rng.normal(size=(f, c) + k), rng.normal(size=(n, f) + out)
    y_ref = ref_conv(x, kernel, None, s, padding)
    dk_ref, _, _ = ref_conv_backward(x, kernel, s, padding, dy)
    ws = {}
    y = conv_ops.conv2d_forward(x, kernel, None, s, pads, ws)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-10)
    dk, db, dx = conv_ops.conv2d_backward(dy, kernel, ws, need_dx=False)
    assert db is None and dx is None
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-12, atol=1e-9)


# (N, C, H, W, pool, strides, padding)
POOL_PATHS = {
    "p3s2_same_overlapping": (60, 16, 20, 20, (3, 3), (2, 2), "same"),
    "p2s2_valid_odd": (60, 12, 17, 19, (2, 2), (2, 2), "valid"),
    "p3x2_s1x2_same": (40, 8, 16, 18, (3, 2), (1, 2), "same"),
}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("layout", ["nchw", "channel_last"])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_PATHS))
def test_pool_paths_match_reference_in_float64(case, kind, layout, ties):
    n, c, h, w, pool, s, padding = POOL_PATHS[case]
    rng = np.random.default_rng(2)
    pads, out = geometry(h, w, pool, s, padding)
    # Ties: a few values only, so most windows hold their maximum several times.
    x = rng.integers(0, 3, size=(n, c, h, w)).astype(np.float64) if ties else rng.normal(size=(n, c, h, w))
    dy = rng.normal(size=(n, c) + out)
    if layout == "channel_last":
        x, dy = channel_last(x), channel_last(dy)
    forward, backward = ((conv_ops.max_pool_forward, conv_ops.max_pool_backward) if kind == "max" else
                         (conv_ops.avg_pool_forward, conv_ops.avg_pool_backward))
    y_ref = ref_pool(x, pool, s, padding, kind)
    dx_ref = ref_pool_backward(x, pool, s, padding, kind, dy)
    ws = {}
    for batch in (n, n, 7):
        y = forward(x[:batch], pool, s, pads, ws)
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, y_ref[:batch], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(backward(dy[:batch], ws), dx_ref[:batch], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h, w, pool, s, padding", [(7, 7, 3, 2, "same"), (8, 9, 2, 2, "valid"),
                                                     (6, 6, 3, 1, "same"), (9, 7, 5, 2, "same")])
def test_max_pool_gradient_goes_to_exactly_one_cell_the_row_major_first_maximum(h, w, pool, s, padding):
    rng = np.random.default_rng(4)
    layer = layers.MaxPool2D(pool, strides=s, padding=padding)
    x = rng.integers(0, 2, (1, 1, h, w)).astype(np.float64)   # ties everywhere
    y = layer(x, training=True)
    top, left = layer._pads[0], layer._pads[2]
    for oy in range(y.shape[2]):
        for ox in range(y.shape[3]):
            dy = np.zeros_like(y)
            dy[0, 0, oy, ox] = 1
            hit = np.argwhere(layer.backward(dy)[0, 0] != 0)
            assert len(hit) == 1
            r0, c0 = oy * s - top, ox * s - left
            window = x[0, 0, max(r0, 0):r0 + pool, max(c0, 0):c0 + pool]
            first = np.unravel_index(np.argmax(window), window.shape)
            assert tuple(hit[0]) == (max(r0, 0) + first[0], max(c0, 0) + first[1])


# ---- aliasing: what callers may keep ------------------------------------------------------------
LAYERS = {"conv": lambda: layers.Conv2D(6, 3, padding="same", activation="relu"),
          "max_pool": lambda: layers.MaxPool2D(3, strides=2, padding="same"),
          "avg_pool": lambda: layers.AvgPool2D(2)}


@pytest.mark.parametrize("name", list(LAYERS))
def test_inference_outputs_are_never_overwritten(name):
    rng = np.random.default_rng(5)
    layer = LAYERS[name]()
    x1, x2 = rng.normal(size=(2, 32, 4, 16, 16)).astype(np.float32)
    y1 = layer(x1)
    kept = y1.copy()
    y2 = layer(x2)
    layer.forward(x2, training=True)
    np.testing.assert_array_equal(y1, kept)
    assert not np.shares_memory(y1, y2)


@pytest.mark.parametrize("name", list(LAYERS))
def test_training_outputs_live_in_the_workspace_until_the_next_training_call(name):
    rng = np.random.default_rng(6)
    layer = LAYERS[name]()
    x1, x2 = rng.normal(size=(2, 32, 4, 16, 16)).astype(np.float32)
    y1 = layer(x1, training=True)
    kept = y1.copy()
    g = rng.normal(size=y1.shape).astype(np.float32)
    dx1 = layer.backward(g).copy()
    grads1 = {k: v.copy() for k, v in layer.grads.items()}
    # An inference call in between neither touches the training output nor the backward pass.
    layer(x2)
    np.testing.assert_array_equal(y1, kept)
    np.testing.assert_array_equal(layer.backward(g), dx1)
    for k in grads1:
        np.testing.assert_array_equal(layer.grads[k], grads1[k])
    # The next training call reuses the buffer: a caller keeping y1 must have copied it.
    y2 = layer.forward(x2, training=True)
    assert np.shares_memory(y1, y2)


def test_predict_results_survive_later_calls():
    rng = np.random.default_rng(7)
    model = Sequential([Input((3, 16, 16)), layers.Conv2D(4, 3, padding="same"), layers.MaxPool2D(2),
                        layers.Conv2D(2, 3, padding="same"), layers.AvgPool2D(2)])
    model.compile("sgd", "mse")
    x1, x2 = rng.normal(size=(2, 40, 3, 16, 16)).astype(np.float32)
    p1 = model.predict(x1, batch_size=16)
    kept = p1.copy()
    model.predict(x2, batch_size=16)
    model.fit(x2, np.zeros((40, 2, 4, 4), np.float32), batch_size=16, verbose=0)
    model.predict(x2, batch_size=16)
    np.testing.assert_array_equal(p1, kept)


@pytest.mark.parametrize("name", list(LAYERS))
def test_workspaces_are_not_pickled(name):
    rng = np.random.default_rng(8)
    layer = LAYERS[name]()
    x = rng.normal(size=(32, 4, 16, 16)).astype(np.float32)
    y = layer(x, training=True)
    layer.backward(np.ones_like(y))
    assert layer._ws
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._ws is None
    assert len(pickle.dumps(layer)) < 20_000 + 4 * sum(p.size for p in layer.params.values()) * 3
    # The clone trains and predicts like the original.
    np.testing.assert_array_equal(clone(x), layer(x))
    yc = clone.forward(x, training=True)
    np.testing.assert_array_equal(clone.backward(np.ones_like(yc)), layer.backward(np.ones_like(y)))
