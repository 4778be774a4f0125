"""Functional (multi-input) models (``sparkdl.engine.functional``): a two-input model against the
same computation written by hand in NumPy (predictions, float64 central differences of the
loss, save/load, copies), and the graph rules (fan-out, shared layers, unconnected inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.models import Input, Model, load_model
from tests.engine.layer_case import numeric_grad

pytestmark = pytest.mark.usefixtures("seeded")


# ---- a functional two-input model ------------------------------------------------------------
N_IDS, FIELDS, DIM, N_DENSE, HIDDEN = 12, 2, 4, 3, 5


def two_input_model():
    dense_in = Input((N_DENSE,), name="dense_in")
    ids_in = Input((FIELDS,), dtype="int64", name="ids_in")
    emb = layers.Flatten(name="flat")(layers.Embedding(N_IDS, DIM, name="emb")(ids_in))
    cat = layers.Concatenate(name="cat")([emb, dense_in])
    h = layers.Dense(HIDDEN, activation="tanh", name="hidden")(cat)
    deep = layers.Dense(1, name="deep")(h)
    wide = layers.Dense(1, name="wide")(dense_in)
    out = layers.Activation("sigmoid", name="prob")(layers.Add(name="sum")([deep, wide]))
    model = Model(inputs=[dense_in, ids_in], outputs=out, name="two_inputs")
    rng = np.random.default_rng(6)
    model.set_weights([rng.normal(0, 0.6, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.compile(optimizer=optimizers.Adam(0.01), loss="binary_crossentropy")
    return model


def named_weights(model, arrays):
    """``{layer name: {param name: array}}`` from a get_weights-ordered list."""
    out, i = {}, 0
    for layer in model.layers:
        out[layer.name] = {}
        for key in list(layer.params) + list(layer.state):
            out[layer.name][key] = arrays[i]
            i += 1
    assert i == len(arrays)
    return out


def hand_forward(W, x_dense, ids):
    e = W["emb"]["embeddings"][ids].reshape(len(ids), -1)
    cat = np.concatenate([e, x_dense], axis=1)
    h = np.tanh(cat @ W["hidden"]["kernel"] + W["hidden"]["bias"])
    z = h @ W["deep"]["kernel"] + W["deep"]["bias"] + x_dense @ W["wide"]["kernel"] + W["wide"]["bias"]
    return 1.0 / (1.0 + np.exp(-z))


def hand_loss(W, x_dense, ids, y):
    p = hand_forward(W, x_dense, ids)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def batch(n=6, seed=7):
    rng = np.random.default_rng(seed)
    x_dense = rng.normal(size=(n, N_DENSE)).astype(np.float32)
    ids = rng.integers(0, N_IDS - 3, size=(n, FIELDS))  # ids N_IDS-3.. never used
    y = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
    return x_dense, ids, y


def test_two_input_model_structure():
    model = two_input_model()
    assert model.output_shape == (1,)
    counts = {layer.name: layer.count_params() for layer in model.layers}
    assert counts["emb"] == N_IDS * DIM
    assert counts["hidden"] == (FIELDS * DIM + N_DENSE) * HIDDEN + HIDDEN
    assert counts["deep"] == HIDDEN + 1
    assert counts["wide"] == N_DENSE + 1
    assert model.count_params() == sum(counts.values())


def test_two_input_model_predict_equals_hand_numpy():
    model = two_input_model()
    x_dense, ids, _ = batch()
    W = named_weights(model, [w.astype(np.float64) for w in model.get_weights()])
    p = model.predict([x_dense, ids])
    assert p.shape == (6, 1)
    np.testing.assert_allclose(p, hand_forward(W, x_dense.astype(np.float64), ids), rtol=1e-5, atol=1e-6)


def test_two_input_model_gradients_equal_central_differences_of_hand_loss():
    model = two_input_model()
    x_dense, ids, y = batch()
    loss, grads = model.compute_gradients([x_dense, ids], y)
    W = named_weights(model, [w.astype(np.float64) for w in model.get_weights()])
    xd = x_dense.astype(np.float64)
    np.testing.assert_allclose(loss, hand_loss(W, xd, ids, y), rtol=1e-5)

    params = {(layer.name, k): layer.params[k] for layer in model.layers for k in layer.params}
    assert len(grads) == len(params)
    checked = set()
    for w, g in zip(model.trainable_weights, grads):
        (lname, key), = [k for k, p in params.items() if np.shares_memory(p, w)]
        num = numeric_grad(lambda: hand_loss(W, xd, ids, y), W[lname][key])
        np.testing.assert_allclose(g, num, rtol=1e-3, atol=2e-6, err_msg=f"{lname}.{key}")
        checked.add((lname, key))
        if lname == "emb":
            assert np.all(g[N_IDS - 3:] == 0)
    assert checked == set(params)


def test_two_input_model_save_load_identical_predictions(tmp_path):
    model = two_input_model()
    x_dense, ids, y = batch()
    model.train_on_batch([x_dense, ids], y)  # optimizer state with sparse slots
    path = tmp_path / "two_inputs.sdl"
    model.save(path)
    loaded = load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    xt, it, _ = batch(5, seed=8)
    np.testing.assert_array_equal(loaded.predict([xt, it]), model.predict([xt, it]))
    # the next step is identical too (weights and Adam slots restored)
    model.train_on_batch([x_dense, ids], y)
    loaded.train_on_batch([x_dense, ids], y)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("copier", ["pickle", "cloudpickle", "deepcopy"])
def test_two_input_model_copy_trains_like_the_original(copier):
    """Copies (how Spark ships a model to executors) train exactly like the original.
    (Copied before any step: optimizer slots are not pickled, they travel on their own.)"""
    import copy
    import pickle

    import cloudpickle

    model = two_input_model()
    x_dense, ids, y = batch()
    model.predict([x_dense, ids])
    copied = {"pickle": lambda m: pickle.loads(pickle.dumps(m)),
              "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
              "deepcopy": copy.deepcopy}[copier](model)
    for _ in range(2):
        loss_a = model.train_on_batch([x_dense, ids], y)
        loss_b = copied.train_on_batch([x_dense, ids], y)
        np.testing.assert_array_equal(loss_a, loss_b)
    for a, b in zip(model.get_weights(), copied.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_two_input_model_input_order_follows_inputs_list():
    model = two_input_model()
    x_dense, ids, _ = batch()
    with pytest.raises((ValueError, TypeError)):
        model.predict([ids, x_dense])  # ids has 2 columns, dense_in expects 3


# ---- graph semantics -------------------------------------------------------------------------
def test_fan_out_tensor_gets_summed_gradient():
    rng = np.random.default_rng(9)
    x_in = Input((3,))
    first = layers.Dense(4, activation="tanh", name="first")
    h = first(x_in)
    a = layers.Dense(2, name="branch_a")(h)
    b = layers.Dense(2, name="branch_b")(h)
    model = Model(inputs=[x_in], outputs=layers.Add()([a, b]))
    model.set_weights([rng.normal(0, 0.7, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.normal(size=(5, 2)).astype(np.float32)
    _, grads = model.compute_gradients(x, y)

    W = named_weights(model, [w.astype(np.float64) for w in model.get_weights()])
    xd = x.astype(np.float64)
    hh = np.tanh(xd @ W["first"]["kernel"] + W["first"]["bias"])
    out = hh @ W["branch_a"]["kernel"] + W["branch_a"]["bias"] + hh @ W["branch_b"]["kernel"] + W["branch_b"]["bias"]
    dout = 2 * (out - y) / out.size
    dh = dout @ W["branch_a"]["kernel"].T + dout @ W["branch_b"]["kernel"].T
    dpre = dh * (1 - hh ** 2)
    g_first = next(g for w, g in zip(model.trainable_weights, grads) if np.shares_memory(w, first.params["kernel"]))
    np.testing.assert_allclose(g_first, xd.T @ dpre, rtol=1e-4, atol=1e-6)


def test_same_tensor_twice_into_concatenate_sums_gradient():
    rng = np.random.default_rng(10)
    x_in = Input((2,))
    first = layers.Dense(3, name="first")
    h = first(x_in)
    out = layers.Dense(1, name="head")(layers.Concatenate()([h, h]))
    model = Model(inputs=x_in, outputs=out)
    model.set_weights([rng.normal(0, 0.7, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(4, 2)).astype(np.float32)
    y = rng.normal(size=(4, 1)).astype(np.float32)
    _, grads = model.compute_gradients(x, y)
    W = named_weights(model, [w.astype(np.float64) for w in model.get_weights()])
    xd = x.astype(np.float64)
    hh = xd @ W["first"]["kernel"] + W["first"]["bias"]
    k = W["head"]["kernel"]
    out_v = np.concatenate([hh, hh], axis=1) @ k + W["head"]["bias"]
    dout = 2 * (out_v - y) / out_v.size
    dh = dout @ k[:3].T + dout @ k[3:].T
    g_first = next(g for w, g in zip(model.trainable_weights, grads) if np.shares_memory(w, first.params["kernel"]))
    np.testing.assert_allclose(g_first, xd.T @ dh, rtol=1e-4, atol=1e-6)


def test_layer_used_twice_raises():
    x_in = Input((3,))
    shared = layers.Dense(3, name="shared_twice")
    out = shared(shared(x_in))
    with pytest.raises(ValueError, match="shared_twice.*more than once"):
        Model(inputs=x_in, outputs=out)


def test_output_not_connected_to_inputs_raises():
    a = Input((3,), name="given_input")
    b = Input((3,), name="missing_input")
    out = layers.Dense(1)(b)
    with pytest.raises(ValueError, match="missing_input.*not in inputs"):
        Model(inputs=[a], outputs=out)
    c = layers.Dense(1)(layers.Concatenate()([a, b]))
    with pytest.raises(ValueError, match="missing_input"):
        Model(inputs=[a], outputs=c)
