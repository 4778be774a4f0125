"""The documented internal API other sparkdl modules use instead of private attributes: what
the distributed workers, the Spark layer, checkpoints and saving call on models, optimizers
and layers."""
import numpy as np
import pytest

from sparkdl.engine import layers, optimizers
from sparkdl.models import Input, Model, Sequential


def _model():
    model = Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                        layers.Dense(2, activation="softmax")])
    model.compile(optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data(n=10):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, size=n)


def test_loss_and_backward_fills_the_live_flat_gradients_without_a_step():
    model = _model()
    x, y = _data()
    xs, yy = model.check_data(x, y, "test")
    before = model.get_flat_weights()
    loss, out = model.loss_and_backward(xs, yy)
    grads = model.flat_gradients
    assert grads.shape == model.flat_weights.shape and grads.dtype == np.float32
    assert grads is model.flat_gradients                    # the live vector, not a copy
    expected_loss, expected = model.compute_gradients(x, y)
    assert loss == pytest.approx(expected_loss)
    np.testing.assert_array_equal(grads, np.concatenate([g.reshape(-1) for g in expected]))
    np.testing.assert_array_equal(model.flat_weights, before)
    assert out.shape == (10, 2) and model.optimizer.iterations == 0


def test_check_data_predict_and_evaluate_arrays_match_the_public_methods():
    model = _model()
    x, y = _data()
    xs, yy = model.check_data(x, y, "test")
    assert isinstance(xs, list) and len(xs) == 1
    np.testing.assert_array_equal(model.predict_arrays(xs, 4), model.predict(x, batch_size=4))
    assert model.evaluate_arrays(xs, yy, 4) == model.evaluate(x, y, batch_size=4)
    with pytest.raises(ValueError, match="^who: expected targets y"):
        model.check_data(x, None, "who")


def test_input_specs_of_sequential_and_functional_models():
    assert _model().input_specs() == [((3,), "float32")]
    a, b = Input((3,)), Input((2,), dtype="int64")
    out = layers.Dense(1)(layers.Concatenate()([a, layers.Flatten()(layers.Embedding(5, 2)(b))]))
    assert Model(inputs=[a, b], outputs=out).input_specs() == [((3,), "float32"), ((2,), "int64")]


def test_require_built_names_the_caller():
    with pytest.raises(ValueError, match="^save: model 'sequential.*' is not built yet"):
        Sequential([layers.Dense(2)]).require_built("save")
    _model().require_built("save")


def test_reset_slots_returns_an_optimizer_to_before_its_first_step():
    opt = optimizers.Adam()
    opt.apply(np.zeros(4, np.float32), np.ones(4, np.float32))
    assert sorted(opt.slots) == ["m", "v"]
    opt.reset_slots()
    assert opt.slots == {}
    params = np.zeros(4, np.float32)
    opt.apply(params, np.ones(4, np.float32))               # allocates afresh
    assert opt.slots["m"].shape == (4,) and np.all(params < 0)


def test_declared_input_shape():
    assert layers.Dense(2, input_shape=(3,)).declared_input_shape == (3,)
    assert layers.Dense(2).declared_input_shape is None


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_logits_and_outputs_are_the_output_layers_pre_activation_and_predict(activation):
    """The logits are the last Dense layer's x @ W + b, written out in NumPy; the outputs are
    predict's, bit for bit."""
    model = Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                        layers.Dense(2, activation=activation)])
    model.compile("sgd", "categorical_crossentropy" if activation == "softmax" else "binary_crossentropy")
    x, _ = _data(7)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    by_hand = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    logits, outputs = model.logits_and_outputs([x], 3)
    assert logits.dtype == outputs.dtype == np.float32 and logits.shape == (7, 2)
    np.testing.assert_allclose(logits, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs, model.predict(x, batch_size=3))


def test_logits_and_outputs_without_a_softmax_or_sigmoid_output():
    """A separate Activation layer has logits too (its input); a relu or linear output has none."""
    separate = Sequential([layers.Dense(3, input_shape=(3,)), layers.Activation("softmax")])
    x, _ = _data(5)
    logits, outputs = separate.logits_and_outputs([x], 4)
    np.testing.assert_allclose(logits, x.astype(np.float64) @ separate.get_weights()[0] + separate.get_weights()[1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs, separate.predict(x))
    for last in (layers.Dense(2, activation="relu"), layers.Dense(2)):
        model = Sequential([layers.Dense(3, input_shape=(3,)), last])
        logits, outputs = model.logits_and_outputs([x], 4)
        assert logits is None
        np.testing.assert_array_equal(outputs, model.predict(x))


def test_row_tables_follow_the_dense_weights_and_name_the_input_that_feeds_them():
    ids, dense = Input((3,), dtype="int64"), Input((2,))
    first, second = layers.Embedding(10, 4), layers.Embedding(7, 1)
    h = layers.Concatenate()([layers.Flatten()(first(ids)), layers.Flatten()(second(ids)), dense])
    model = Model(inputs=[dense, ids], outputs=layers.Dense(1)(h))
    tables = model.row_tables()
    assert [(layer, key) for layer, key, _ in tables] == [(first, "embeddings"), (second, "embeddings")]
    assert model.dense_size == model.flat_weights.size - 10 * 4 - 7
    assert [offset for _, _, offset in tables] == [model.dense_size, model.dense_size + 40]
    for layer, key, offset in tables:
        size = layer.params[key].size
        assert np.shares_memory(model.flat_weights[offset:offset + size], layer.params[key])
        assert model.feeding_input(layer) == 1
    assert model.feeding_input(model.layers[-1]) is None


def test_input_consumers_are_the_layers_reading_an_input_directly():
    ids, dense = Input((3,), dtype="int64"), Input((2,))
    emb, proj = layers.Embedding(10, 4), layers.Dense(3)
    h = layers.Concatenate()([layers.Flatten()(emb(ids)), proj(dense)])
    model = Model(inputs=[ids, dense], outputs=layers.Dense(1)(h))
    assert model.input_consumers(0) == [emb] and model.input_consumers(1) == [proj]
    seq = Sequential([layers.Input((3,), dtype="int64"), layers.Embedding(10, 2), layers.Flatten()])
    assert seq.input_consumers(0) == [seq.layers[0]]
