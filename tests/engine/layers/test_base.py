"""The Layer protocol (``sparkdl.engine.layers.base``) every built-in and user layer follows:
a user layer in a few lines, tested by the shared layer case like the built-ins; names; the
input shape a layer is built for; pickling without forward caches."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.models import Sequential
from tests.engine.layer_case import LayerCase


class Scale(layers.Layer):
    """A user layer: ``x * w`` with one weight per feature."""

    def build(self, input_shape):
        self.add_weight("w", (input_shape[-1],), initializer="ones")

    def forward(self, x, training=False):
        if training:
            self._x = x
        return x * self.params["w"]

    def backward(self, dLdy):
        self.grads["w"][...] = (dLdy * self._x).reshape(-1, dLdy.shape[-1]).sum(axis=0)
        return dLdy * self.params["w"]


@pytest.mark.parametrize("shape", [(3,), (2, 3)])
def test_a_user_layer_is_tested_like_the_built_ins(shape):
    LayerCase(Scale, shape, output_shape=shape, reference=lambda x, p: x * p["w"],
              torch_fn=lambda x, p: x * p["w"]).check()


def test_default_names_are_the_snake_case_class_name_numbered_from_the_second():
    class FancyThing2D(layers.Layer):
        pass
    # Keras' rule: a capital starts a word unless a digit precedes it (Conv2D -> conv2d).
    assert [FancyThing2D().name for _ in range(3)] == ["fancy_thing2d", "fancy_thing2d_2", "fancy_thing2d_3"]
    assert FancyThing2D(name="mine").name == "mine"


def test_a_built_layer_refuses_inputs_of_another_shape():
    dense = layers.Dense(2, name="dense_three")
    dense(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"'dense_three' was built for inputs of shape \(None, 3\), "
                                         r"received \(None, 4\)"):
        dense(np.zeros((1, 4), np.float32))


def test_a_layer_whose_build_fails_stays_unbuilt_and_can_be_built_again():
    conv = layers.Conv2D(2, 3)
    with pytest.raises(ValueError):
        conv(np.zeros((1, 2, 2, 2), np.float32))       # 3x3 kernel on a 2x2 image
    assert not conv.built and not conv.params
    assert conv(np.zeros((1, 2, 5, 5), np.float32)).shape == (1, 2, 3, 3)
    assert conv.built and conv.params["kernel"].shape == (2, 2, 3, 3)


def test_pickling_drops_what_forward_kept_for_backward_and_keeps_the_weights():
    dense = layers.Dense(4, activation="tanh")
    x = np.ones((64, 8), np.float32)
    dense(x)
    dense.forward(x, training=True)
    assert dense._x is not None and dense._y is not None
    clone = pickle.loads(pickle.dumps(dense))
    assert clone._x is None and clone._y is None
    np.testing.assert_array_equal(clone.params["kernel"], dense.params["kernel"])
    np.testing.assert_array_equal(clone(x), dense(x))


@pytest.mark.parametrize("shape, error", [((0,), ValueError), ((3, -1), ValueError), ("abc", TypeError)])
def test_a_declared_input_shape_must_be_positive_ints(shape, error):
    with pytest.raises(error, match="Dense: expected input_shape as a positive int or a tuple of positive ints"):
        layers.Dense(2, input_shape=shape)


# ---- Keras 2's input_dim --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda **kw: layers.Dense(3, **kw), lambda **kw: layers.Dropout(0.2, **kw),
                                  lambda **kw: layers.Activation("relu", **kw), lambda **kw: Scale(**kw),
                                  lambda **kw: layers.BatchNorm(**kw)],
                         ids=["Dense", "Dropout", "Activation", "user layer", "BatchNorm"])
def test_input_dim_on_any_layer_is_input_shape_of_one_axis(make):
    layer = make(input_dim=7)
    assert layer.declared_input_shape == (7,)
    assert layer.get_config()["input_shape"] == [7]
    model = Sequential([layer])
    assert model.input_specs() == [((7,), "float32")]


def test_input_dim_and_input_shape_together_or_bad_input_dim_are_refused():
    with pytest.raises(TypeError, match=r"Dense: expected input_shape or input_dim, not both; received "
                                        r"input_shape=\(3,\) and input_dim=3"):
        layers.Dense(2, input_shape=(3,), input_dim=3)
    with pytest.raises(ValueError, match=r"Dense: expected input_dim > 0 \(an int\), received input_dim=0"):
        layers.Dense(2, input_dim=0)
    with pytest.raises(ValueError, match="expected input_dim > 0"):
        layers.Dense(2, input_dim=2.5)


def test_a_keras_2_model_built_with_add_and_input_dim():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    model = Sequential()
    model.add(layers.Dense(128, input_dim=784))
    model.add(layers.Activation("relu"))
    model.add(layers.Dropout(0.2))
    model.add(layers.Dense(10))
    model.add(layers.Activation("softmax"))
    assert model.built and model.output_shape == (10,)
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10
    model.compile(optimizer=optimizers.SGD(0.05), loss="sparse_categorical_crossentropy", metrics=["acc"])
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    assert len(history.history["loss"]) == 2
    # input_shape on the first layer, the same model
    same = Sequential([layers.Dense(128, input_shape=(784,)), layers.Activation("relu"), layers.Dropout(0.2),
                       layers.Dense(10), layers.Activation("softmax")])
    same.set_weights(model.get_weights())
    np.testing.assert_array_equal(same.predict(x), model.predict(x))
