"""Embedding (``sparkdl.engine.layers.embedding``) through the shared layer case (a table lookup,
float64 central-difference gradients of the table, PyTorch parity), its sparse gradients, the
sparse optimizer step a model takes for it, and bad ids and arguments."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.models import Input, Model, Sequential
from tests.engine.layer_case import LayerCase

pytestmark = pytest.mark.usefixtures("seeded")


def embedding_case(input_dim, output_dim, ids, seed):
    """An Embedding with a float64 N(0, 1) table, looked up at the fixed ``ids``."""
    ids = np.asarray(ids)
    return LayerCase(lambda: layers.Embedding(input_dim, output_dim), ids.shape[1:], batch=len(ids),
                     inputs=lambda shape, rng: ids.copy(), input_grad=False, scale=1.0, seed=seed,
                     reference=lambda x, p: p["embeddings"][x],
                     torch_fn=lambda x, p: __import__("torch").nn.functional.embedding(x, p["embeddings"]),
                     rtol=1e-7, atol=1e-9)


# ---- Embedding -------------------------------------------------------------------------------
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
    case = embedding_case(10, 3, [[1, 7, 4], [4, 8, 1]], seed=1)
    case.check()
    _, grads = case.check_gradients()
    analytic = grads["embeddings"]
    unused = [0, 2, 3, 5, 6, 9]
    assert np.all(analytic[unused] == 0)
    assert np.all(np.abs(analytic[[1, 4, 7, 8]]).sum(axis=1) > 0)
    layer, x, _ = case.check_forward()
    layer.forward(x, training=True)
    layer.backward(np.ones((2, 3, 3)))
    np.testing.assert_array_equal(np.sort(layer.touched_rows["embeddings"]), [1, 4, 7, 8])


def test_embedding_repeated_ids_accumulate():
    rng = np.random.default_rng(2)
    layer, ids = embedding_case(5, 2, [[3, 3, 0], [3, 1, 0]], seed=2).build(rng)
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
    layer, _ = embedding_case(6, 2, [[0, 1]], seed=3).build(np.random.default_rng(3))
    layer.forward(np.array([[0, 1]]), training=True)
    layer.backward(np.ones((1, 2, 2)))
    layer.forward(np.array([[1, 5]]), training=True)
    layer.backward(np.full((1, 2, 2), 2.0))
    expected = np.zeros((6, 2))
    expected[1] = expected[5] = 2.0
    np.testing.assert_array_equal(layer.grads["embeddings"], expected)


# ---- sparse steps in a model -----------------------------------------------------------------
def _embedding_model(seed=0):
    ids = Input((3,), dtype="int64", name="ids")
    emb = layers.Embedding(20, 4, name="emb")
    h = layers.Flatten()(emb(ids))
    out = layers.Dense(1, activation="sigmoid", name="out")(h)
    model = Model(inputs=[ids], outputs=out)
    model.compile(optimizer=optimizers.Adam(learning_rate=0.05), loss="binary_crossentropy")
    return model, emb


def _slot_view(model, array, slot):
    """The optimizer slot entries of ``array`` (a trainable weight): slots follow the flat
    buffer's order, so they sit at the array's offset inside ``flat_weights``."""
    flat = model.flat_weights
    if not np.shares_memory(flat, array):
        raise AssertionError("array is not a trainable weight of the model")
    offset = (array.ctypes.data - flat.ctypes.data) // flat.itemsize
    return model.optimizer.slots[slot][offset:offset + array.size].reshape(array.shape)


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


# ---- bad ids and arguments -------------------------------------------------------------------
def test_float_ids_into_embedding():
    emb = layers.Embedding(10, 2, name="emb_float")
    with pytest.raises(TypeError, match="emb_float.*integer ids.*float64"):
        emb(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="emb_float.*integer ids.*float32"):
        emb.forward(np.array([[1.0, 2.0]], dtype=np.float32))


@pytest.mark.parametrize("ids, received", [([[3, 10]], r"\[3, 10\]"), ([[-1, 4]], r"\[-1, 4\]"),
                                           ([[12, 11]], r"\[11, 12\]")])
def test_embedding_ids_out_of_range(ids, received):
    emb = layers.Embedding(10, 2, name="emb_range")
    with pytest.raises(ValueError, match=r"emb_range.*\[0, 9\].*input_dim=10.*" + received):
        emb(np.array(ids))


def test_embedding_ids_out_of_range_through_a_model():
    ids_in = Input((2,), dtype="int64")
    model = Model(ids_in, layers.Flatten()(layers.Embedding(10, 2, name="emb_model")(ids_in)))
    with pytest.raises(ValueError, match=r"emb_model.*\[0, 9\].*\[0, 10\]"):
        model.predict(np.array([[0, 10]]))
    with pytest.raises(ValueError, match=r"emb_model.*\[0, 9\].*\[-2, 3\]"):
        model.predict(np.array([[3, -2]]))


@pytest.mark.parametrize("kwargs", [dict(input_dim=0, output_dim=2), dict(input_dim=5, output_dim=0),
                                    dict(input_dim=5.0, output_dim=2)])
def test_embedding_bad_dims(kwargs):
    bad = next(k for k, v in kwargs.items() if not (isinstance(v, int) and v > 0))
    with pytest.raises(ValueError, match=f"Embedding.*{bad}"):
        layers.Embedding(**kwargs)


def test_input_length_is_keras_2_s_input_shape_of_an_embedding():
    layer = layers.Embedding(10, 3, input_length=4)
    assert layer.declared_input_shape == (4,) and layer.input_dim == 10
    model = Sequential([layer, layers.Flatten(), layers.Dense(1)])
    assert model.input_specs() == [((4,), "int64")] and model.output_shape == (1,)
    with pytest.raises(TypeError, match="Embedding: expected input_shape or input_length, not both"):
        layers.Embedding(10, 3, input_length=4, input_shape=(4,))
    with pytest.raises(ValueError, match="Embedding: expected input_length > 0"):
        layers.Embedding(10, 3, input_length=0)
