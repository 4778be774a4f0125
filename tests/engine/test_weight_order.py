"""Public weight lists follow the layer order (as in Keras), whatever order the flat buffer
keeps inside: an Embedding's table sits where its layer is in ``get_weights``,
``trainable_weights`` and ``compute_gradients`` alike, so zipping them pairs the right arrays."""
import numpy as np
import pytest

from sparkdl.distributed.checkpoint import CheckpointStore
from sparkdl.engine import layers, optimizers
from sparkdl.models import Input, Model, Sequential, load_model

LR = 0.1


def _functional():
    dense_in, ids = Input((2,), name="dense_in"), Input((3,), dtype="int64", name="ids")
    a = layers.Dense(4, activation="tanh", name="a")(dense_in)
    e = layers.Flatten()(layers.Embedding(10, 2, name="emb")(ids))
    out = layers.Dense(1, activation="sigmoid", name="out")(layers.Concatenate()([a, e]))
    model = Model(inputs=[dense_in, ids], outputs=out)
    shapes = [(2, 4), (4,), (10, 2), (10, 1), (1,)]   # a, emb, out
    return model, shapes


def _sequential():
    model = Sequential([Input((3,), dtype="int64"), layers.Embedding(10, 2, name="emb"),
                        layers.Flatten(), layers.Dense(4, activation="tanh"), layers.Dense(1, activation="sigmoid")])
    return model, [(10, 2), (6, 4), (4,), (4, 1), (1,)]


def _data(model, n=6):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10, size=(n, 3))
    xs = ids if len(model.input_specs()) == 1 else [rng.normal(size=(n, 2)).astype(np.float32), ids]
    return xs, rng.integers(0, 2, size=(n, 1)).astype(np.float32)


def _compiled(make):
    model, shapes = make()
    model.compile(optimizers.SGD(learning_rate=LR), "binary_crossentropy")
    return model, shapes


@pytest.mark.parametrize("make", [_functional, _sequential])
def test_public_lists_are_in_layer_order_and_pair_up(make):
    model, shapes = _compiled(make)
    x, y = _data(model)
    in_layers = [layer.params[k] for layer in model.layers if layer.trainable for k in layer.params]
    loss, grads = model.compute_gradients(x, y)
    assert [w.shape for w in model.get_weights()] == shapes
    assert [w.shape for w in model.weights] == shapes
    assert [w.shape for w in model.trainable_weights] == shapes
    assert [g.shape for g in grads] == shapes
    for w, g, own in zip(model.trainable_weights, grads, in_layers, strict=True):
        assert w is own                           # the layer's own (live) array
        assert np.shares_memory(w, model.flat_weights)
        assert not np.shares_memory(g, model.flat_gradients)   # gradients are copies
    grad_of = {id(layer.params[k]): layer.grads[k] for layer in model.layers for k in layer.params}
    for w, g in zip(model.trainable_weights, grads):
        np.testing.assert_array_equal(g, grad_of[id(w)])
    emb = next(layer for layer in model.layers if layer.name == "emb")
    position = shapes.index((10, 2))
    assert model.trainable_weights[position] is emb.params["embeddings"]
    assert np.array_equal(model.get_weights()[position], emb.params["embeddings"])


@pytest.mark.parametrize("make", [_functional, _sequential])
def test_a_hand_step_on_zipped_weights_and_gradients_is_the_optimizer_step(make):
    model, _ = _compiled(make)
    x, y = _data(model)
    _, grads = model.compute_gradients(x, y)
    expected = [w - np.float32(LR) * g for w, g in zip(model.get_weights(), grads, strict=True)]
    model.train_on_batch(x, y)
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [_functional, _sequential])
def test_set_weights_of_get_weights_round_trips(make):
    model, shapes = _compiled(make)
    x, _ = _data(model)
    flat, before = model.get_flat_weights(), model.predict(x)
    model.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.get_flat_weights(), flat)
    np.testing.assert_array_equal(model.predict(x), before)
    # Distinct values per array: each lands in its own layer's weight.
    new = [np.full(s, i + 1.0, np.float32) for i, s in enumerate(shapes)]
    model.set_weights(new)
    for got, want, own in zip(model.get_weights(), new, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(own, want)


@pytest.mark.parametrize("make", [_functional, _sequential])
def test_saved_models_and_checkpoints_of_embedding_models_restore(make, tmp_path):
    model, _ = _compiled(make)
    x, y = _data(model)
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.sparkdl")
    loaded = load_model(tmp_path / "m.sparkdl")
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    store = CheckpointStore(tmp_path / "ckpt")
    store.save(model, 1, {})
    target, _ = _compiled(make)
    store.restore_latest(target)
    np.testing.assert_array_equal(target.get_flat_weights(), model.get_flat_weights())
    for a, b in zip(target.trainable_weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, b)
