"""The core layers (``sparkdl.engine.layers.core``): Dense, Dropout, Flatten and Reshape, each
through the shared layer case (forward against NumPy, float64 central-difference gradients,
PyTorch parity), plus what the case cannot see (masks, skipped input gradients, arguments)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers
from tests.engine.layer_case import NUMPY_ACTIVATIONS, LayerCase, float64_layer, torch_activation

ACTIVATIONS = list(NUMPY_ACTIVATIONS)


def dense_case(units, activation, in_shape, batch, use_bias=True, logits=False, seed=0):
    def reference(x, p):
        z = x @ p["kernel"] + (p["bias"] if use_bias else 0)
        return z if logits else NUMPY_ACTIVATIONS[activation](z)

    def torch_fn(x, p):
        return torch_activation(activation)(x @ p["kernel"] + (p["bias"] if use_bias else 0))
    return LayerCase(lambda: layers.Dense(units, activation=activation, use_bias=use_bias), in_shape,
                     reference=reference, torch_fn=torch_fn, batch=batch, scale=0.7, logits=logits,
                     kink=activation in ("relu", "leaky_relu") and not logits, seed=seed,
                     forward_rtol=1e-10, forward_atol=1e-12)


# ---- Dense -----------------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_gradients(activation, use_bias):
    case = dense_case(4, activation, (5,), batch=6, use_bias=use_bias, seed=7)
    layer, _, _ = case.check_forward()
    assert ("bias" in layer.params) == use_bias
    case.check_gradients()


@pytest.mark.parametrize("activation", ["relu", "softmax", "tanh"])
def test_dense_gradients_3d_input(activation):
    case = dense_case(3, activation, (2, 4), batch=3, seed=8)
    case.check_forward()
    dx, _ = case.check_gradients()
    assert dx.shape == (3, 2, 4)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "relu"])
def test_dense_logits_path_gradients(activation):
    """forward_logits/backward_logits are the affine part only, whatever the activation."""
    case = dense_case(4, activation, (5,), batch=6, logits=True, seed=9)
    case.check_forward()
    case.check_gradients()


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_matches_torch_linear(activation):
    dense_case(5, activation, (6,), batch=8, seed=1).check_torch()


def test_dense_without_input_grad_still_fills_param_grads():
    rng = np.random.default_rng(10)
    layer = float64_layer(layers.Dense(3, activation="tanh"), (4,), rng, scale=0.7)
    x = rng.normal(size=(5, 4))
    G = rng.normal(size=(5, 3))
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


@pytest.mark.parametrize("units", [0, -3, 2.5, True, "4"])
def test_dense_bad_units(units):
    with pytest.raises(ValueError, match=f"Dense: expected units > 0 \\(an int\\), received units={units!r}"):
        layers.Dense(units=units)


# ---- Dropout ---------------------------------------------------------------------------------
def test_dropout_training_gradients_with_fixed_mask():
    case = LayerCase(lambda: layers.Dropout(0.4), (7,), batch=6, mask_seed=2024, training_forward=True,
                     seed=31)
    layer, x, y = case.check_forward()
    kept = y != 0
    assert 0 < kept.sum() < x.size, "the mask should drop some but not all units"
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-12)
    dx, _ = case.check_gradients()
    np.testing.assert_array_equal(dx == 0, ~kept)


def test_dropout_inference_is_identity_with_identity_gradient():
    layer = layers.Dropout(0.5)
    x = np.random.default_rng(32).normal(size=(4, 3))
    np.testing.assert_array_equal(layer(x, training=False), x)
    G = np.random.default_rng(33).normal(size=(4, 3))
    np.testing.assert_array_equal(layer.backward(G), G)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5"])
def test_dropout_bad_rate(rate):
    with pytest.raises(ValueError, match=f"Dropout: expected 0 <= rate < 1, received rate={rate!r}"):
        layers.Dropout(rate=rate)


# ---- Flatten, Reshape ------------------------------------------------------------------------
def test_flatten_gradients():
    LayerCase(lambda: layers.Flatten(), (2, 4, 2), batch=3, output_shape=(16,),
              reference=lambda x, p: x.reshape(len(x), -1), seed=41).check()


RESHAPED = {(4, 3): (4, 3), (-1, 2): (6, 2), (12,): (12,)}   # of (2, 6)


@pytest.mark.parametrize("target", list(RESHAPED))
def test_reshape_gradients(target):
    expected = RESHAPED[target]
    LayerCase(lambda: layers.Reshape(target), (2, 6), batch=3, output_shape=expected,
              reference=lambda x, p: x.reshape((len(x),) + expected), seed=42).check()
