"""The registry of custom objects and its scopes (``sparkdl.engine.custom_objects``, public as
``sparkdl.saving``): registration, conflicts, scopes, precedence of ``custom_objects=``, and
every kind of user object (layer, activation, loss, metric, initializer, optimizer) through
``load_model`` and ``model_from_json``."""
from __future__ import annotations

import json

import numpy as np
import pytest

import sparkdl
from sparkdl import layers, losses, metrics, optimizers, saving
from sparkdl.engine import initializers
from sparkdl.models import Sequential, load_model, model_from_json
from tests.custom_layers import PACKAGE, Scale, swish


@pytest.fixture
def registry():
    """The registry, restored to its entries before the test when the test ends."""
    objects = saving.get_custom_objects()
    before = dict(objects)
    yield objects
    for name in [n for n in objects if n not in before]:
        del objects[name]
    for name, obj in before.items():
        if objects.get(name) is not obj:
            objects[name] = obj


# ---- user objects of every kind, registered inside the tests -------------------------------------
class HalfMSE(losses.Loss):
    """``scale * mean((y - p)^2)``, configurable."""
    name = "half_mse"

    def __init__(self, scale=0.5):
        self.scale = scale

    def per_sample(self, y_true, y_pred):
        return self.scale * np.mean((y_pred - y_true).reshape(len(y_pred), -1) ** 2, axis=1)

    def value_and_grad(self, y_true, y_pred):
        diff = y_pred - y_true
        return float(self.scale * np.mean(diff * diff)), diff * np.asarray(2 * self.scale / diff.size, diff.dtype)

    def get_config(self):
        return {"name": self.name, "scale": self.scale}


class MaxAbsError(metrics.Metric):
    """The largest ``|y - p|`` times ``scale``; its state merges by maximum."""
    name = "max_abs_error"

    def __init__(self, scale=1.0):
        self.scale = scale
        super().__init__()

    def _zero_state(self):
        return np.zeros(1)

    def update(self, y_true, y_pred):
        self.state[0] = max(self.state[0], float(np.max(np.abs(y_pred - y_true.reshape(y_pred.shape)))))

    def result(self):
        return float(self.state[0] * self.scale)

    def get_config(self):
        return {"name": self.name, "scale": self.scale}


class Constant(initializers.Initializer):
    name = "constant"

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, rng):
        return np.full(shape, self.value, dtype=np.float32)

    def get_config(self):
        return {"name": self.name, "value": self.value}


class SignSGD(optimizers.Optimizer):
    """``p -= lr * sign(g)``."""
    name = "sign_sgd"

    def _update(self, p, g, lr, slots, tmp):
        p -= lr * np.sign(g)


def _register_all(registry):
    for obj in (HalfMSE, MaxAbsError, Constant, SignSGD):
        saving.register_serializable(package="t")(obj)


def _user_model():
    model = Sequential([layers.Dense(4, activation=swish, kernel_initializer=Constant(0.25), input_shape=(3,)),
                        Scale(init=2.0), layers.Dense(2)])
    model.compile(SignSGD(learning_rate=0.01), HalfMSE(scale=0.25), metrics=[MaxAbsError(scale=3.0), "mae"])
    return model


def _data(n=12):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


# ---- registration ----------------------------------------------------------------------------------
def test_the_decorator_registers_under_package_and_name_and_returns_the_object(registry):
    def relu6(x):
        return np.clip(x, 0, 6)
    assert saving.register_serializable(package="mine")(relu6) is relu6
    assert saving.get_registered_name(relu6) == "mine>relu6"
    assert saving.get_registered_object("mine>relu6") is relu6
    assert saving.register_keras_serializable(package="mine", name="six")(relu6) is relu6
    assert saving.get_registered_object("mine>six") is relu6
    assert saving.get_registered_name(Scale) == f"{PACKAGE}>Scale"
    assert saving.get_registered_name(Scale()) == f"{PACKAGE}>Scale"      # an instance: its class
    assert saving.get_registered_name(np.tanh) == "tanh"                   # not registered: __name__
    assert saving.get_registered_object("mine>nothing") is None


def test_two_objects_under_one_name_is_an_error_naming_both(registry):
    @saving.register_serializable(package="mine", name="Thing")
    class First:
        pass

    class Second:
        pass
    with pytest.raises(ValueError, match=r"register_serializable: the name 'mine>Thing' is taken by "
                                         r"tests\.engine\.test_custom_objects\..*First; expected "
                                         r"another name for tests\.engine\.test_custom_objects\..*Second"):
        saving.register_serializable(package="mine", name="Thing")(Second)
    assert saving.get_registered_object("mine>Thing") is First
    with pytest.raises(ValueError, match="'mine>Thing' is taken by"):
        saving.get_custom_objects()["mine>Thing"] = Second
    saving.register_serializable(package="mine", name="Thing")(First)      # the same object again: fine


def test_a_redefinition_of_the_same_class_replaces_it(registry):
    # A re-run notebook cell or a reloaded module makes a new class of the same qualified name.
    def define():
        class Again:
            pass
        return Again
    a, b = define(), define()
    saving.register_serializable(package="mine")(a)
    saving.register_serializable(package="mine")(b)
    assert saving.get_registered_object("mine>Again") is b
    assert saving.get_registered_name(b) == "mine>Again"
    assert saving.get_registered_name(a) == "Again"


def test_bad_registrations_are_refused(registry):
    with pytest.raises(ValueError, match="expected package as a non-empty str without '>'"):
        saving.register_serializable(package="a>b")
    with pytest.raises(TypeError, match="expected name as a non-empty str"):
        saving.register_serializable(name=3)
    with pytest.raises(TypeError, match="register_serializable: expected a class or a function, received 3"):
        saving.register_serializable()(3)


def test_get_custom_objects_is_the_registry_keras_2_style(registry, tmp_path):
    def cube(x):
        return x ** 3
    cube.derivative = lambda x, y: 3 * x ** 2
    saving.get_custom_objects()["cube"] = cube
    model = Sequential([layers.Dense(2, activation=cube, input_shape=(3,))])
    model.save(tmp_path / "m.zip")
    assert load_model(tmp_path / "m.zip").layers[0].activation.fn is cube


# ---- scopes and precedence -------------------------------------------------------------------------
def test_scopes_nest_innermost_first_and_end_with_their_block():
    a, b = object(), object()
    with saving.custom_object_scope({"x": a, "y": a}) as outer:
        assert outer == {"x": a, "y": a}
        with sparkdl.custom_object_scope({"x": b}, None):
            assert saving.get_registered_object("x") is b
            assert saving.get_registered_object("y") is a
        assert saving.get_registered_object("x") is a
    assert saving.get_registered_object("x") is None
    with pytest.raises(TypeError, match="custom_object_scope: expected dicts of"):
        with saving.custom_object_scope(["x"]):
            pass


def test_custom_objects_win_over_the_registry_by_full_or_short_name(tmp_path):
    class OtherScale(Scale):
        pass
    model = Sequential([Scale(input_shape=(3,))])
    model.save(tmp_path / "m.zip")
    assert model.get_config()["layers"][0]["class_name"] == f"{PACKAGE}>Scale"
    assert type(load_model(tmp_path / "m.zip").layers[0]) is Scale
    for key in ("Scale", f"{PACKAGE}>Scale"):
        assert type(load_model(tmp_path / "m.zip", custom_objects={key: OtherScale}).layers[0]) is OtherScale
        with saving.custom_object_scope({key: OtherScale}):
            assert type(load_model(tmp_path / "m.zip").layers[0]) is OtherScale
    with pytest.raises(ValueError, match="expected the custom object 'sparkdl_tests>Scale' to be a Layer "
                                         "subclass, received <function swish"):
        load_model(tmp_path / "m.zip", custom_objects={"Scale": swish})


def test_an_unregistered_user_layer_is_named_by_its_class_and_needs_custom_objects(tmp_path):
    class Plain(Scale):
        pass
    Sequential([Plain(input_shape=(3,))]).save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match=r"unknown layer class 'Plain'; register it with "
                                         r"@register_serializable or pass custom_objects="):
        load_model(tmp_path / "m.zip")
    assert type(load_model(tmp_path / "m.zip", custom_objects={"Plain": Plain}).layers[0]) is Plain


# ---- every kind of user object, through the loaders --------------------------------------------------
def test_every_kind_of_registered_object_round_trips_through_load_model(registry, tmp_path):
    _register_all(registry)
    model = _user_model()
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, seed=0)
    doc = model.get_config()
    assert doc["layers"][0]["config"]["kernel_initializer"] == {"class_name": "t>Constant",
                                                                "config": {"name": "constant", "value": 0.25}}
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip")
    assert type(loaded.layers[1]) is Scale and loaded.layers[0].activation.fn is swish
    assert type(loaded.loss) is HalfMSE and loaded.loss.scale == 0.25
    assert type(loaded.optimizer) is SignSGD and loaded.optimizer.iterations == 6
    assert [type(m) for m in loaded.metrics] == [MaxAbsError, metrics.MeanAbsoluteError]
    assert loaded.metrics[0].scale == 3.0
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    # Training goes on identically from the loaded optimizer.
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    np.testing.assert_array_equal(loaded.get_flat_weights(), model.get_flat_weights())


def test_unregistered_objects_load_with_custom_objects_by_their_names(tmp_path):
    model = _user_model()
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match=r"unknown initializer config \{'name': 'constant', 'value': 0\.25\}"):
        load_model(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="unknown optimizer config .*'sign_sgd'"):
        load_model(tmp_path / "m.zip", custom_objects={"constant": Constant})
    loaded = load_model(tmp_path / "m.zip", custom_objects={"sign_sgd": SignSGD, "half_mse": HalfMSE,
                                                            "max_abs_error": MaxAbsError, "constant": Constant})
    assert (type(loaded.optimizer), type(loaded.loss), loaded.loss.scale) == (SignSGD, HalfMSE, 0.25)
    assert loaded.metrics[0].scale == 3.0


def test_model_from_json_finds_registered_and_scoped_objects(registry):
    _register_all(registry)
    model = _user_model()
    text = model.to_json()
    rebuilt = model_from_json(text)
    assert [type(layer) for layer in rebuilt.layers] == [layers.Dense, Scale, layers.Dense]
    np.testing.assert_array_equal(rebuilt.get_weights()[0], np.full((3, 4), 0.25, np.float32))

    class OtherScale(Scale):
        pass
    assert type(model_from_json(text, custom_objects={"Scale": OtherScale}).layers[1]) is OtherScale
    with saving.custom_object_scope({"Scale": OtherScale}):
        assert type(model_from_json(text).layers[1]) is OtherScale
    del registry["t>Constant"]
    with pytest.raises(ValueError, match=r"unknown initializer 't>Constant'; expected a registered object"):
        model_from_json(text)


def test_a_custom_object_of_the_wrong_kind_is_a_type_error(registry):
    _register_all(registry)
    with pytest.raises(TypeError, match="expected the custom object 't>HalfMSE' to be a Metric"):
        metrics.get("t>HalfMSE")
    with pytest.raises(TypeError, match="expected the custom object 't>SignSGD' to be an activation"):
        layers.Dense(2, activation="t>SignSGD")


def test_a_json_config_of_user_objects_is_plain_json(registry):
    _register_all(registry)
    json.dumps(_user_model().get_config())
