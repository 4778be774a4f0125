"""The backward hook of ``Model.loss_and_backward(..., on_ready)``: each trainable range of
the flat gradients is reported exactly once, as soon as it is final (its values then are the
values after the whole backward), the output layer's first; reporting changes no bit."""
from __future__ import annotations

import numpy as np

from sparkdl import layers
from sparkdl.models import Input, Model, Sequential


def recorded(model, xs, y):
    """``(ranges in the order reported, their values when reported, final flat gradients)``."""
    ranges, values = [], []

    def on_ready(start, stop):
        ranges.append((start, stop))
        values.append(model.flat_gradients[start:stop].copy())
    model.loss_and_backward(xs, y, on_ready=on_ready)
    return ranges, values, model.flat_gradients.copy()


def check_ranges(model, xs, y):
    xs, y = model.check_data(xs if len(xs) > 1 else xs[0], y, "test")
    model.reseed(0)                                      # the same dropout masks both times
    model.loss_and_backward(xs, y)
    plain = model.flat_gradients.copy()
    model.reseed(0)
    ranges, values, final = recorded(model, xs, y)
    covered = np.zeros(final.size, np.int64)
    for (a, b), v in zip(ranges, values):
        covered[a:b] += 1
        np.testing.assert_array_equal(v, final[a:b])    # final when reported
    assert covered.tolist() == [1] * final.size          # every element exactly once
    np.testing.assert_array_equal(final, plain)          # the hook changes nothing
    return ranges


def test_a_sequential_model_reports_its_layers_last_first_each_range_once():
    model = Sequential([layers.Dense(7, activation="relu", input_shape=(5,)), layers.BatchNormalization(),
                        layers.Dropout(0.2), layers.Dense(6, activation="tanh"),
                        layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    ranges = check_ranges(model, [rng.normal(size=(9, 5)).astype(np.float32)], rng.integers(0, 3, 9))
    # one range per layer with weights (kernel and bias, or gamma and beta, are adjacent)
    assert len(ranges) == 4
    assert ranges == sorted(ranges, reverse=True)        # the flat vector is in layer order


def test_a_frozen_layer_is_not_reported_and_the_others_still_are():
    model = Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(4, trainable=False), layers.Dense(2)])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(1)
    ranges = check_ranges(model, [rng.normal(size=(6, 3)).astype(np.float32)],
                          rng.normal(size=(6, 2)).astype(np.float32))
    assert len(ranges) == 2 and ranges == sorted(ranges, reverse=True)


def test_a_graph_with_two_branches_and_an_embedding_reports_each_range_once():
    """The Embedding's weights come after every dense weight in the flat vector (row-sparse
    gradients), yet are reported when its backward is done."""
    dense_in = Input((4,))
    ids_in = Input((2,), dtype="int64")
    branch = layers.Dense(4, activation="tanh", name="branch")(dense_in)
    emb = layers.Flatten()(layers.Embedding(10, 2, name="emb")(ids_in))
    out = layers.Dense(3, activation="softmax", name="out")(layers.Concatenate()([branch, emb]))
    model = Model(inputs=[dense_in, ids_in], outputs=out)
    model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 10, size=(8, 2))]
    ranges = check_ranges(model, xs, rng.integers(0, 3, 8))
    assert len(ranges) == 3
    size = model.flat_gradients.size
    assert ranges[0][1] < size and size in {b for _, b in ranges[1:]}   # "out" first; emb last in memory
