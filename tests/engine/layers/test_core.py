"""Central-difference gradient checks (Chainer style) for layers, losses and a whole model.

Layers run in float64 here: a standalone layer keeps the dtype of its input, so after
casting its params and grads to float64 the analytic backward pass can be compared with a
float64 central difference at tight tolerances. For a layer the checked scalar is
``f = sum(forward(x) * G)`` with a random upstream gradient ``G``, so ``backward(G)`` must
equal ``df/dx`` and fill ``grads`` with ``df/dparam``.
"""
from __future__ import annotations

import numpy as np
from tests.engine.layer_case import numeric_grad
import pytest

from sparkdl import layers, losses
from sparkdl.models import Sequential

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-7
KINK = 1e-3  # keep pre-activations at least this far from the ReLU kink at 0


# ---- helpers --------------------------------------------------------------------------------


def to_float64(layer, rng=None):
    """Cast a built layer's params (re-drawn from ``rng`` if given) and grads to float64."""
    for k in layer.params:
        value = layer.params[k].astype(np.float64)
        if rng is not None:
            value = rng.normal(0.0, 0.7, size=value.shape)
        layer.params[k] = np.ascontiguousarray(value)
        layer.grads[k] = np.zeros_like(layer.params[k])


def away_from_zero(x: np.ndarray, margin: float = KINK) -> np.ndarray:
    """Push entries with ``|x| < margin`` out to ``±2 * margin`` (keeps the sign)."""
    x = x.copy()
    small = np.abs(x) < margin
    x[small] = np.where(x[small] >= 0, 2 * margin, -2 * margin)
    return x


def check_layer(layer, x, *, logits=False, before_forward=None, rng=None):
    """Gradient-check ``layer`` at float64 input ``x`` w.r.t. ``x`` and every param."""
    rng = rng or np.random.default_rng(1234)
    x = np.ascontiguousarray(x, dtype=np.float64)
    forward = layer.forward_logits if logits else layer.forward
    backward = layer.backward_logits if logits else layer.backward

    def run(inp):
        if before_forward is not None:
            before_forward()
        return forward(inp, training=True)

    y = run(x.copy())
    assert y.dtype == np.float64, "layer must preserve a float64 input dtype"
    G = rng.normal(size=y.shape)
    dx = backward(G.copy())
    assert dx.shape == x.shape
    analytic = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
    assert set(analytic) == set(layer.params)

    xp = x.copy()
    num_dx = numeric_grad(lambda: float(np.sum(run(xp) * G)), xp)
    np.testing.assert_allclose(dx, num_dx, rtol=RTOL, atol=ATOL, err_msg="dL/dx")
    for k, p in layer.params.items():
        num = numeric_grad(lambda: float(np.sum(run(x.copy()) * G)), p)
        np.testing.assert_allclose(analytic[k], num, rtol=RTOL, atol=ATOL, err_msg=f"dL/d{k}")
    return dx, analytic


def dense_inputs(layer, shape, seed, needs_margin):
    """Random inputs; with ``needs_margin`` re-draw until no pre-activation is near 0."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        x = rng.normal(size=shape)
        if not needs_margin:
            return x
        z = x @ layer.params["kernel"]
        if "bias" in layer.params:
            z = z + layer.params["bias"]
        if np.min(np.abs(z)) > KINK:
            return x
    raise AssertionError("could not draw inputs away from the ReLU kink")


ACTIVATIONS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax"]


# ---- Dense ----------------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_gradients(activation, use_bias):
    layer = layers.Dense(4, activation=activation, use_bias=use_bias)
    layer(np.zeros((1, 5), dtype=np.float32))
    to_float64(layer, np.random.default_rng(7))
    assert ("bias" in layer.params) == use_bias
    x = dense_inputs(layer, (6, 5), seed=11, needs_margin=activation in ("relu", "leaky_relu"))
    check_layer(layer, x)


@pytest.mark.parametrize("activation", ["relu", "softmax", "tanh"])
def test_dense_gradients_3d_input(activation):
    layer = layers.Dense(3, activation=activation)
    layer(np.zeros((1, 2, 4), dtype=np.float32))
    to_float64(layer, np.random.default_rng(8))
    x = dense_inputs(layer, (3, 2, 4), seed=12, needs_margin=activation == "relu")
    dx, _ = check_layer(layer, x)
    assert dx.shape == (3, 2, 4)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "relu"])
def test_dense_logits_path_gradients(activation):
    """forward_logits/backward_logits are the affine part only, whatever the activation."""
    layer = layers.Dense(4, activation=activation)
    layer(np.zeros((1, 5), dtype=np.float32))
    to_float64(layer, np.random.default_rng(9))
    x = np.random.default_rng(13).normal(size=(6, 5))
    check_layer(layer, x, logits=True)
    z = layer.forward_logits(x)
    np.testing.assert_allclose(z, x @ layer.params["kernel"] + layer.params["bias"], rtol=1e-12)


def test_dense_without_input_grad_still_fills_param_grads():
    layer = layers.Dense(3, activation="tanh")
    layer(np.zeros((1, 4), dtype=np.float32))
    to_float64(layer, np.random.default_rng(10))
    x = np.random.default_rng(14).normal(size=(5, 4))
    G = np.random.default_rng(15).normal(size=(5, 3))
    layer.forward(x, training=True)
    layer.backward(G)
    expected = {k: v.copy() for k, v in layer.grads.items()}
    layer.needs_input_grad = False
    for g in layer.grads.values():
        g[...] = 0
    layer.forward(x, training=True)
    assert layer.backward(G) is None
    for k in expected:
        np.testing.assert_allclose(layer.grads[k], expected[k], rtol=1e-12)


# ---- Activation layers ----------------------------------------------------------------------
ACTIVATION_LAYERS = {
    "ReLU": lambda: layers.ReLU(),
    "LeakyReLU(0.1)": lambda: layers.LeakyReLU(0.1),
    "Sigmoid": lambda: layers.Sigmoid(),
    "Tanh": lambda: layers.Tanh(),
    "Softmax": lambda: layers.Softmax(),
    "Activation(linear)": lambda: layers.Activation("linear"),
}


@pytest.mark.parametrize("name", list(ACTIVATION_LAYERS))
def test_activation_layer_gradients(name):
    layer = ACTIVATION_LAYERS[name]()
    x = away_from_zero(np.random.default_rng(21).normal(scale=2.0, size=(5, 6)))
    layer(x)
    assert not layer.params
    x_before = x.copy()
    check_layer(layer, x)
    np.testing.assert_array_equal(x, x_before)  # forward must not overwrite its input


def test_leaky_relu_slope_is_alpha_on_negative_side():
    layer = layers.LeakyReLU(0.1)
    x = np.array([[-2.0, -0.5, 0.5, 2.0]])
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, [[-0.2, -0.05, 0.5, 2.0]], rtol=1e-12)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), [[0.1, 0.1, 1.0, 1.0]], rtol=1e-12)


# ---- Dropout, Flatten, Reshape --------------------------------------------------------------
def test_dropout_training_gradients_with_fixed_mask():
    layer = layers.Dropout(0.4)
    x = np.random.default_rng(31).normal(size=(6, 7))
    layer(x)

    def reseed():
        layer.rng = np.random.default_rng(2024)

    reseed()
    y = layer.forward(x, training=True)
    kept = y != 0
    assert 0 < kept.sum() < x.size, "the mask should drop some but not all units"
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-12)
    dx, _ = check_layer(layer, x, before_forward=reseed)
    np.testing.assert_array_equal(dx == 0, ~kept)


def test_dropout_inference_is_identity_with_identity_gradient():
    layer = layers.Dropout(0.5)
    x = np.random.default_rng(32).normal(size=(4, 3))
    np.testing.assert_array_equal(layer(x, training=False), x)
    G = np.random.default_rng(33).normal(size=(4, 3))
    np.testing.assert_array_equal(layer.backward(G), G)


def test_flatten_gradients():
    layer = layers.Flatten()
    x = np.random.default_rng(41).normal(size=(3, 2, 4, 2))
    assert layer(x).shape == (3, 16)
    check_layer(layer, x)


@pytest.mark.parametrize("target", [(4, 3), (-1, 2), (12,)])
def test_reshape_gradients(target):
    layer = layers.Reshape(target)
    x = np.random.default_rng(42).normal(size=(3, 2, 6))
    y = layer(x)
    np.testing.assert_array_equal(y.reshape(3, -1), x.reshape(3, -1))
    check_layer(layer, x)


# ---- losses ---------------------------------------------------------------------------------
def _loss_case(name, rng):
    """(y_true, y_pred) in float64, predictions well inside the clipping range."""
    n, k = 5, 4
    if name == "mse":
        return rng.normal(size=(n, k)), rng.normal(size=(n, k))
    if name == "binary_crossentropy":
        y_true = np.concatenate([rng.integers(0, 2, size=(n, 2)), rng.uniform(size=(n, 1))], axis=1)
        return y_true, rng.uniform(0.05, 0.95, size=(n, 3))
    p = rng.uniform(0.1, 1.0, size=(n, k))
    p /= p.sum(axis=1, keepdims=True)
    if name == "categorical_crossentropy":
        y_true = np.eye(k)[rng.integers(0, k, size=n)]
        y_true[0] = [0.1, 0.2, 0.3, 0.4]  # a soft-label row as well
        return y_true, p
    return rng.integers(0, k, size=n), p


def _logits_case(name, rng):
    n, k = 5, 4
    z = rng.normal(scale=2.0, size=(n, k))
    if name == "binary_crossentropy":
        return np.concatenate([rng.integers(0, 2, size=(n, 2)), rng.uniform(size=(n, 2))], axis=1), z
    if name == "categorical_crossentropy":
        y_true = np.eye(k)[rng.integers(0, k, size=n)]
        y_true[1] = [0.25, 0.25, 0.5, 0.0]
        y_true[2] = [0.3, 0.0, 0.1, 0.2]  # unnormalised: the logits gradient must not assume sum 1
        return y_true, z
    return rng.integers(0, k, size=n), z


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("name", ["mse", "binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_loss_probability_form_gradients(name):
    loss = losses.get(name)
    y_true, y_pred = _loss_case(name, np.random.default_rng(51))
    value, grad = loss.value_and_grad(y_true, y_pred.copy())
    assert grad.shape == y_pred.shape and grad.dtype == np.float64
    yp = y_pred.copy()
    num = numeric_grad(lambda: loss.value_and_grad(y_true, yp)[0], yp)
    np.testing.assert_allclose(grad, num, rtol=RTOL, atol=ATOL)
    # The mean of per_sample is the loss value, and so is calling the loss.
    np.testing.assert_allclose(np.mean(loss.per_sample(y_true, y_pred)), value, rtol=1e-12)
    np.testing.assert_allclose(loss(y_true, y_pred), value, rtol=1e-12)


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_loss_logits_form_gradients(name):
    loss = losses.get(name)
    y_true, z = _logits_case(name, np.random.default_rng(52))
    value, grad = loss.value_and_grad_logits(y_true, z.copy())
    assert grad.shape == z.shape and grad.dtype == np.float64
    zp = z.copy()
    num = numeric_grad(lambda: loss.value_and_grad_logits(y_true, zp)[0], zp)
    np.testing.assert_allclose(grad, num, rtol=RTOL, atol=ATOL)
    # The logits form is the probability form composed with the matching activation.
    probs = 1 / (1 + np.exp(-z)) if name == "binary_crossentropy" else _softmax(z)
    np.testing.assert_allclose(value, loss(y_true, probs), rtol=1e-9)
    np.testing.assert_allclose(np.mean(loss.per_sample_logits(y_true, z)), value, rtol=1e-12)


# ---- whole model ----------------------------------------------------------------------------
def _mlp(seed, out_layers):
    rng = np.random.default_rng(seed)
    model = Sequential([layers.Dense(8, activation="tanh", input_shape=(5,)),
                        layers.Dense(6, activation="relu")] + out_layers)
    model.set_weights([rng.normal(0.0, 0.6, size=w.shape) for w in model.weights])
    return model


def _reference_loss(ws, x, y):
    """Float64 forward of the 5-8-6-4 tanh/relu/softmax MLP and its mean sparse CE."""
    h = np.tanh(x @ ws[0] + ws[1])
    h = np.maximum(h @ ws[2] + ws[3], 0)
    z = h @ ws[4] + ws[5]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def test_model_gradients_match_float64_central_differences():
    model = _mlp(61, [layers.Dense(4, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ws = [w.astype(np.float64) for w in model.trainable_weights]
    rng = np.random.default_rng(62)
    for _ in range(200):  # draw inputs whose ReLU pre-activations all avoid the kink at 0
        x = rng.normal(size=(10, 5)).astype(np.float32)
        x64 = x.astype(np.float64)
        pre_relu = np.tanh(x64 @ ws[0] + ws[1]) @ ws[2] + ws[3]
        if np.min(np.abs(pre_relu)) > KINK:
            break
    else:
        raise AssertionError("could not draw inputs away from the ReLU kink")
    assert np.any(pre_relu < 0) and np.any(pre_relu > 0)  # both ReLU branches are exercised
    y = rng.integers(0, 4, size=10)

    loss, grads = model.compute_gradients(x, y)
    np.testing.assert_allclose(loss, _reference_loss(ws, x64, y), rtol=1e-5)
    assert len(grads) == len(ws) == 6
    for i, (g, w) in enumerate(zip(grads, ws)):
        assert g.shape == w.shape and g.dtype == np.float32
        num = numeric_grad(lambda: _reference_loss(ws, x64, y), w)
        # The model computes in float32: its gradient carries ~1e-7 relative rounding.
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6, err_msg=f"weight {i}")
    # compute_gradients takes no step.
    for w, w0 in zip(model.trainable_weights, ws):
        np.testing.assert_array_equal(w, w0.astype(np.float32))


class _UnfusedSparseCE(losses.SparseCategoricalCrossentropy):
    """Same loss, but never fused with the output softmax: the model must run the
    probability form and back-propagate through the softmax."""
    fusable_activation = None


class _UnfusedCE(losses.CategoricalCrossentropy):
    fusable_activation = None


class _UnfusedBCE(losses.BinaryCrossentropy):
    fusable_activation = None


@pytest.mark.parametrize("loss_name,unfused_cls,out_act", [
    ("sparse_categorical_crossentropy", _UnfusedSparseCE, "softmax"),
    ("categorical_crossentropy", _UnfusedCE, "softmax"),
    ("binary_crossentropy", _UnfusedBCE, "sigmoid"),
])
@pytest.mark.parametrize("separate_activation", [False, True], ids=["Dense(act)", "Dense+Activation"])
def test_fused_and_unfused_paths_agree(loss_name, unfused_cls, out_act, separate_activation):
    def make():
        out = ([layers.Dense(4), layers.Activation(out_act)] if separate_activation
               else [layers.Dense(4, activation=out_act)])
        return _mlp(71, out)

    rng = np.random.default_rng(72)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    if loss_name == "sparse_categorical_crossentropy":
        y = rng.integers(0, 4, size=12)
    elif loss_name == "categorical_crossentropy":
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=12)]
    else:
        y = rng.integers(0, 2, size=(12, 4)).astype(np.float32)

    fused, unfused = make(), make()
    fused.compile(optimizer="sgd", loss=loss_name)
    unfused.compile(optimizer="sgd", loss=unfused_cls())
    # Private flag, checked only so that this test provably compares two different paths.
    assert fused._fused and not unfused._fused
    for a, b in zip(fused.get_weights(), unfused.get_weights()):
        np.testing.assert_array_equal(a, b)

    loss_f, grads_f = fused.compute_gradients(x, y)
    loss_u, grads_u = unfused.compute_gradients(x, y)
    np.testing.assert_allclose(loss_f, loss_u, rtol=1e-5)
    for gf, gu in zip(grads_f, grads_u):
        # Observed differences are ~6e-8 (float32 rounding of gradients up to ~0.5).
        np.testing.assert_allclose(gf, gu, rtol=1e-5, atol=5e-7)
    # And both are the gradient of the same function: the evaluated loss matches.
    np.testing.assert_allclose(fused.evaluate(x, y)["loss"], loss_f, rtol=1e-5)
