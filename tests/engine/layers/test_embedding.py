"""Embedding, Add, Concatenate and functional (multi-input) models.

Gradients are checked against float64 central differences; the functional model is checked
against the same computation written by hand in NumPy from its weights.
"""
from __future__ import annotations

import numpy as np
from tests.engine.layer_case import numeric_grad
import pytest

from sparkdl import layers, optimizers, set_random_seed
from sparkdl.models import Input, Model, load_model

EPS = 1e-6


@pytest.fixture(autouse=True)
def _seeded():
    """Deterministic initial weights for every test here."""
    set_random_seed(1234)




def float64_embedding(input_dim, output_dim, rng):
    layer = layers.Embedding(input_dim, output_dim)
    layer(np.zeros((1, 1), dtype=np.int64))
    layer.params["embeddings"] = rng.normal(size=(input_dim, output_dim))
    layer.grads["embeddings"] = np.zeros((input_dim, output_dim))
    return layer


# ---- Embedding ------------------------------------------------------------------------------
def test_embedding_forward_is_a_table_lookup():
    layer = layers.Embedding(6, 3)
    ids = np.array([[0, 5, 2], [2, 2, 4]])
    y = layer(ids)
    assert layer.output_shape == (3, 3)
    assert y.shape == (2, 3, 3)
    table = layer.params["embeddings"]
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(y[i, j], table[ids[i, j]])
    layer.params["embeddings"][...] = np.arange(18, dtype=np.float32).reshape(6, 3)
    np.testing.assert_array_equal(layer(np.array([[4, 0, 4]]))[0, 0], [12.0, 13.0, 14.0])
    # 1-D ids (one field) give (n, dim)
    np.testing.assert_array_equal(layers.Embedding(6, 3)(np.array([1, 2])).shape, (2, 3))


def test_embedding_gradient_central_difference_on_used_rows():
    rng = np.random.default_rng(1)
    layer = float64_embedding(10, 3, rng)
    ids = np.array([[1, 7, 4], [4, 8, 1]])
    G = rng.normal(size=(2, 3, 3))
    layer.forward(ids, training=True)
    assert layer.backward(G) is None  # ids have no gradient
    analytic = layer.grads["embeddings"].copy()
    table = layer.params["embeddings"]
    num = numeric_grad(lambda: float(np.sum(layer.forward(ids, training=True) * G)), table)
    np.testing.assert_allclose(analytic, num, rtol=1e-7, atol=1e-9)
    unused = [0, 2, 3, 5, 6, 9]
    assert np.all(analytic[unused] == 0)
    assert np.all(np.abs(analytic[[1, 4, 7, 8]]).sum(axis=1) > 0)
    np.testing.assert_array_equal(np.sort(layer.touched_rows["embeddings"]), [1, 4, 7, 8])


def test_embedding_repeated_ids_accumulate():
    rng = np.random.default_rng(2)
    layer = float64_embedding(5, 2, rng)
    ids = np.array([[3, 3, 0], [3, 1, 0]])
    G = rng.normal(size=(2, 3, 2))
    layer.forward(ids, training=True)
    layer.backward(G)
    expected = np.zeros((5, 2))
    for i in range(2):
        for j in range(3):
            expected[ids[i, j]] += G[i, j]
    np.testing.assert_allclose(layer.grads["embeddings"], expected, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["embeddings"][3], G[0, 0] + G[0, 1] + G[1, 0], rtol=1e-12)


def test_embedding_second_backward_clears_rows_of_the_first():
    rng = np.random.default_rng(3)
    layer = float64_embedding(6, 2, rng)
    layer.forward(np.array([[0, 1]]), training=True)
    layer.backward(np.ones((1, 2, 2)))
    layer.forward(np.array([[1, 5]]), training=True)
    layer.backward(np.full((1, 2, 2), 2.0))
    expected = np.zeros((6, 2))
    expected[1] = expected[5] = 2.0
    np.testing.assert_array_equal(layer.grads["embeddings"], expected)


def _embedding_model(seed=0):
    ids = Input((3,), dtype="int64", name="ids")
    emb = layers.Embedding(20, 4, name="emb")
    h = layers.Flatten()(emb(ids))
    out = layers.Dense(1, activation="sigmoid", name="out")(h)
    model = Model(inputs=[ids], outputs=out)
    model.compile(optimizer=optimizers.Adam(learning_rate=0.05), loss="binary_crossentropy")
    return model, emb


def _slot_view(model, array, slot):
    """The optimizer slot entries of ``array`` (a trainable weight), located through
    ``trainable_weights`` (the flat order the slots follow)."""
    offset = 0
    for w in model.trainable_weights:
        if np.shares_memory(w, array):
            return model.optimizer.slots[slot][offset:offset + w.size].reshape(w.shape)
        offset += w.size
    raise AssertionError("array is not a trainable weight of the model")


def test_sparse_adam_step_leaves_unused_rows_and_their_slots_alone():
    model, emb = _embedding_model()
    y = np.array([[1.0], [0.0]])
    # Step 1 touches rows {1, 2, 3, 4, 5, 6}; they get non-zero Adam moments.
    model.train_on_batch(np.array([[1, 2, 3], [4, 5, 6]]), y)
    table1 = emb.params["embeddings"].copy()
    m1, v1 = _slot_view(model, emb.params["embeddings"], "m").copy(), \
        _slot_view(model, emb.params["embeddings"], "v").copy()
    assert np.all(m1[[1, 2, 3, 4, 5, 6]] != 0)
    assert np.all(m1[[0, 7, 19]] == 0)
    dense_kernel = model.layers[-1].params["kernel"].copy()

    # Step 2 touches rows {2, 7, 9, 10}. A dense Adam step would still move rows 1, 3-6
    # through their momentum; the sparse step must not.
    model.train_on_batch(np.array([[2, 7, 9], [10, 7, 2]]), y)
    table2 = emb.params["embeddings"]
    m2 = _slot_view(model, table2, "m")
    v2 = _slot_view(model, table2, "v")
    used = [2, 7, 9, 10]
    unused = [r for r in range(20) if r not in used]
    np.testing.assert_array_equal(table2[unused], table1[unused])
    np.testing.assert_array_equal(m2[unused], m1[unused])
    np.testing.assert_array_equal(v2[unused], v1[unused])
    assert np.all(np.abs(table2[used] - table1[used]).sum(axis=1) > 0)
    assert np.all(np.abs(m2[used] - m1[used]).sum(axis=1) > 0)
    # dense weights take a dense step every time
    assert np.all(model.layers[-1].params["kernel"] != dense_kernel)
    # rows never used keep their initial values through both steps (row 0 untouched)
    assert np.all(v2[[0, 19]] == 0)


def test_compute_gradients_of_embedding_model_is_zero_on_unused_rows():
    model, emb = _embedding_model()
    ids = np.array([[0, 3, 3], [5, 0, 9]])
    _, grads = model.compute_gradients(ids, np.array([[1.0], [0.0]]))
    g = next(g for w, g in zip(model.trainable_weights, grads) if np.shares_memory(w, emb.params["embeddings"]))
    assert g.shape == (20, 4)
    assert np.all(g[[r for r in range(20) if r not in (0, 3, 5, 9)]] == 0)
    assert np.all(np.abs(g[[0, 3, 5, 9]]).sum(axis=1) > 0)


# ---- Add and Concatenate --------------------------------------------------------------------
def check_merge(layer, xs, rng):
    xs = [np.ascontiguousarray(x, dtype=np.float64) for x in xs]
    y = layer(xs, training=True)
    G = rng.normal(size=y.shape)
    dxs = layer.backward(G.copy())
    assert len(dxs) == len(xs)
    for i, x in enumerate(xs):
        xp = [a.copy() for a in xs]
        num = numeric_grad(lambda: float(np.sum(layer.forward(xp, training=True) * G)), xp[i])
        assert dxs[i].shape == x.shape
        np.testing.assert_allclose(dxs[i], num, rtol=1e-7, atol=1e-9, err_msg=f"input {i}")
    return y


def test_add_forward_and_gradients():
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(3, 2, 4)) for _ in range(3)]
    layer = layers.Add()
    snapshot = [x.copy() for x in xs]
    y = check_merge(layer, xs, rng)
    np.testing.assert_allclose(y, snapshot[0] + snapshot[1] + snapshot[2], rtol=1e-12)
    for x, s in zip(xs, snapshot):  # inputs not modified
        np.testing.assert_array_equal(x, s)
    assert layer.output_shape == (2, 4)


@pytest.mark.parametrize("axis, shapes, expected", [
    (-1, [(3, 2), (3, 4)], (3, 6)),
    (1, [(2, 3, 4), (2, 1, 4), (2, 2, 4)], (2, 6, 4)),
    (2, [(2, 3, 1), (2, 3, 2)], (2, 3, 3)),
    (-2, [(2, 1, 3), (2, 2, 3)], (2, 3, 3)),
])
def test_concatenate_forward_and_gradients(axis, shapes, expected):
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=s) for s in shapes]
    layer = layers.Concatenate(axis=axis)
    y = check_merge(layer, xs, rng)
    assert y.shape == expected
    assert layer.output_shape == expected[1:]
    # each input sits at its offset along the axis
    ax = axis % len(expected)
    start = 0
    for x in xs:
        idx = [slice(None)] * len(expected)
        idx[ax] = slice(start, start + x.shape[ax])
        np.testing.assert_array_equal(y[tuple(idx)], x)
        start += x.shape[ax]


# ---- a functional two-input model -----------------------------------------------------------
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


# ---- graph semantics ------------------------------------------------------------------------
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
