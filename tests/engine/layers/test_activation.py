"""Activation layers (``sparkdl.engine.layers.activation``) through the shared layer case:
forward against NumPy, float64 central-difference gradients, PyTorch parity."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers
from tests.engine.layer_case import NUMPY_ACTIVATIONS, LayerCase, away_from_zero, torch_activation

# (layer, NumPy reference, torch reference name); inputs stay 1e-3 away from the kink at 0,
# where ReLU's derivative is a convention.
ACTIVATION_LAYERS = {
    "ReLU": (lambda: layers.ReLU(), "relu"),
    "LeakyReLU(0.1)": (lambda: layers.LeakyReLU(0.1), None),
    "Sigmoid": (lambda: layers.Sigmoid(), "sigmoid"),
    "Tanh": (lambda: layers.Tanh(), "tanh"),
    "Softmax": (lambda: layers.Softmax(), "softmax"),
    "Activation(linear)": (lambda: layers.Activation("linear"), "linear"),
}


def activation_case(name, seed, scale=2.0, batch=5, width=6):
    make, fn = ACTIVATION_LAYERS[name]

    def reference(x, p):
        return np.where(x > 0, x, 0.1 * x) if fn is None else NUMPY_ACTIVATIONS[fn](x)

    def torch_fn(x, p):
        if fn is None:          # LeakyReLU(0.1): not sparkdl's default alpha
            import torch
            return torch.nn.functional.leaky_relu(x, 0.1)
        return torch_activation(fn)(x)
    return LayerCase(make, (width,), batch=batch, reference=reference, torch_fn=torch_fn, seed=seed,
                     inputs=lambda shape, rng: away_from_zero(rng.normal(scale=scale, size=shape)),
                     forward_rtol=1e-12, forward_atol=1e-15)


@pytest.mark.parametrize("name", list(ACTIVATION_LAYERS))
def test_activation_layer_gradients(name):
    case = activation_case(name, seed=21)
    layer, _, _ = case.check_forward()      # also: forward does not overwrite its input
    assert not layer.params
    case.check_gradients()


@pytest.mark.parametrize("name", [n for n in ACTIVATION_LAYERS if n != "Activation(linear)"])
def test_activation_layers_match_torch(name):
    activation_case(name, seed=2, scale=3.0, batch=7, width=9).check_torch()


def test_leaky_relu_slope_is_alpha_on_negative_side():
    layer = layers.LeakyReLU(0.1)
    x = np.array([[-2.0, -0.5, 0.5, 2.0]])
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, [[-0.2, -0.05, 0.5, 2.0]], rtol=1e-12)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), [[0.1, 0.1, 1.0, 1.0]], rtol=1e-12)
