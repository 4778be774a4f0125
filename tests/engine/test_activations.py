"""User activations (``sparkdl.engine.activations``): a function with a ``derivative`` in
``Dense`` and ``Activation``, a weightless Layer as a layer's activation, their float64
gradient checks, the errors, and their round trip through a saved model."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.models import Sequential, load_model
from sparkdl.saving import custom_object_scope
from tests.custom_layers import PACKAGE, Scale, swish
from tests.engine.layer_case import LayerCase, away_from_zero


def ref_swish(z):
    return z / (1 + np.exp(-z))


def test_dense_with_a_callable_activation_passes_the_gradient_check():
    LayerCase(lambda: layers.Dense(3, activation=swish), (4,), batch=3, seed=5,
              reference=lambda x, p: ref_swish(x @ p["kernel"] + p["bias"]),
              torch_fn=lambda x, p: __import__("torch").nn.functional.silu(x @ p["kernel"] + p["bias"]),
              forward_rtol=1e-12, forward_atol=1e-14).check()


def test_activation_layer_with_a_callable_passes_the_gradient_check():
    LayerCase(lambda: layers.Activation(swish), (5,), batch=4, seed=6, reference=lambda x, p: ref_swish(x),
              forward_rtol=1e-12, forward_atol=1e-14).check()


def test_a_callable_class_with_a_derivative_method_works():
    class Cube:
        def __call__(self, x):
            return x ** 3

        def derivative(self, x, y):
            return 3 * x ** 2
    LayerCase(lambda: layers.Dense(2, activation=Cube()), (3,), seed=7,
              reference=lambda x, p: (x @ p["kernel"] + p["bias"]) ** 3).check()


def test_a_weightless_layer_as_activation_passes_the_gradient_check():
    case = LayerCase(lambda: layers.Dense(4, activation=layers.LeakyReLU(0.2)), (3,), batch=3, seed=8,
                     reference=lambda x, p: np.where(x @ p["kernel"] + p["bias"] > 0, x @ p["kernel"] + p["bias"],
                                                     0.2 * (x @ p["kernel"] + p["bias"])),
                     kink=True, inputs=lambda shape, rng: away_from_zero(rng.normal(size=shape)))
    layer, _, _ = case.check_forward()
    assert set(layer.params) == {"kernel", "bias"}
    case.check_gradients()


def test_the_forward_pass_of_a_callable_activation_keeps_its_input_for_the_derivative():
    # The derivative reads x: an in-place forward would hand it y instead.
    calls = []

    def square(x):
        return x * x
    square.derivative = lambda x, y: calls.append((x.copy(), y.copy())) or 2 * x
    layer = layers.Dense(2, activation=square, use_bias=False)
    x = np.array([[1.0, 2.0]])
    layer(x)
    layer.params["kernel"][...] = [[1.0, 0.0], [0.0, -1.0]]
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, [[1.0, 4.0]])
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(calls[0][0], [[1.0, -2.0]])   # z = x @ kernel
    np.testing.assert_array_equal(calls[0][1], [[1.0, 4.0]])


def test_a_callable_without_a_derivative_is_a_type_error_saying_what_to_add():
    def cube(x):
        return x ** 3
    with pytest.raises(TypeError, match=r"activation 'cube': expected a callable with a derivative: add "
                                        r"cube\.derivative = lambda x, y: \.\.\."):
        layers.Dense(2, activation=cube)
    with pytest.raises(TypeError, match="cube.derivative"):
        layers.Activation(cube)


def test_an_activation_that_changes_the_shape_is_refused():
    def total(x):
        return x.sum(axis=-1, keepdims=True)
    total.derivative = lambda x, y: np.ones_like(x)
    with pytest.raises(ValueError, match=r"activation 'total': expected an output of the input's shape"):
        layers.Activation(total)(np.ones((2, 3)))


def test_activation_layers_with_weights_or_randomness_are_refused():
    with pytest.raises(ValueError, match=r"Dense 'd_scaled': expected an activation layer without "
                                         r"weights, received <Scale .*> with weights \['w'\]"):
        Sequential([layers.Dense(3, activation=Scale(), name="d_scaled", input_shape=(2,))])
    with pytest.raises(ValueError, match="Dense: expected an activation layer without randomness"):
        layers.Dense(3, activation=layers.Dropout(0.5))


def test_a_user_activation_named_like_softmax_is_not_fused_with_the_loss():
    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    softmax.derivative = lambda x, y: np.ones_like(x)      # deliberately not softmax's Jacobian
    model = Sequential([layers.Dense(3, activation=softmax, input_shape=(2,))])
    model.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    assert model._fused is False
    builtin = Sequential([layers.Dense(3, activation="softmax", input_shape=(2,))])
    builtin.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    assert builtin._fused is True


def _model_with_user_activations():
    model = Sequential([layers.Dense(4, activation=swish, input_shape=(3,)),
                        layers.Activation(swish),
                        layers.Dense(2, activation=layers.LeakyReLU(0.3))])
    model.compile(optimizers.SGD(0.1), "mse")
    return model


def test_saved_models_record_a_registered_function_by_its_registered_name(tmp_path):
    model = _model_with_user_activations()
    config = model.get_config()["layers"]
    assert config[0]["config"]["activation"] == f"{PACKAGE}>swish"
    assert config[1]["config"]["activation"] == f"{PACKAGE}>swish"
    assert config[2]["config"]["activation"] == {"class_name": "LeakyReLU",
                                                 "config": {"trainable": True, "alpha": 0.3}}
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip")
    assert loaded.layers[0].activation.fn is swish
    assert isinstance(loaded.layers[2].activation, layers.LeakyReLU)
    assert loaded.layers[2].activation.alpha == 0.3
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_an_unregistered_function_loads_through_custom_objects(tmp_path):
    def cube(x):
        return x ** 3
    cube.derivative = lambda x, y: 3 * x ** 2
    model = Sequential([layers.Dense(2, activation=cube, input_shape=(3,))])
    model.save(tmp_path / "m.zip")
    assert model.get_config()["layers"][0]["config"]["activation"] == "cube"
    with pytest.raises(ValueError, match="unknown activation 'cube'"):
        load_model(tmp_path / "m.zip")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(load_model(tmp_path / "m.zip", custom_objects={"cube": cube}).predict(x),
                                  model.predict(x))
    with custom_object_scope({"cube": cube}):
        assert load_model(tmp_path / "m.zip").layers[0].activation.fn is cube
