"""Ready-made models: the MLP, LeNet, SparkNet's CIFAR-10 "quick" net, and the click-through
models of the parameter-server literature (a DNN over embeddings, and Wide & Deep).

Each builder returns an uncompiled model, so callers choose optimizer, loss and metrics.
"""
from __future__ import annotations

from sparkdl.engine import layers
from sparkdl.engine.layers.core import Input
from sparkdl.engine.model import Model
from sparkdl.engine.sequential import Sequential
from sparkdl.engine.symbolic import SymbolicTensor


def mlp(input_dim=784, hidden=(256, 128), num_classes=10, activation="relu", dropout=0.0,
        name="mlp") -> Sequential:
    """Dense layers of ``hidden`` units, then a softmax over ``num_classes``
    (a single sigmoid unit when ``num_classes`` is 1)."""
    stack: list[layers.Layer | SymbolicTensor] = [layers.Input((input_dim,))]
    for units in hidden:
        stack.append(layers.Dense(units, activation=activation))
        if dropout:
            stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(num_classes, activation="sigmoid" if num_classes == 1 else "softmax"))
    return Sequential(stack, name=name)


def lenet(input_shape=(1, 28, 28), num_classes=10, name="lenet") -> Sequential:
    """Caffe's LeNet: conv 5x5x20, max-pool 2, conv 5x5x50, max-pool 2, dense 500 (ReLU), dense."""
    return Sequential([
        layers.Input(input_shape),
        layers.Conv2D(20, 5),
        layers.MaxPool2D(2),
        layers.Conv2D(50, 5),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(500, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name=name)


def cifar_quick(input_shape=(3, 32, 32), num_classes=10, name="cifar_quick") -> Sequential:
    """SparkNet's CifarApp net (Caffe's cifar10_quick): conv 5x5x32 pad 2, max-pool 3/2, ReLU,
    conv 5x5x32 pad 2, ReLU, avg-pool 3/2, conv 5x5x64 pad 2, ReLU, avg-pool 3/2, dense 64,
    dense. Pools use ``same`` padding, which on these even sizes is Caffe's ceil-mode geometry
    (32 -> 16 -> 8 -> 4)."""
    return Sequential([
        layers.Input(input_shape),
        layers.Conv2D(32, 5, padding="same"),
        layers.MaxPool2D(3, strides=2, padding="same"),
        layers.ReLU(),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.AvgPool2D(3, strides=2, padding="same"),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.AvgPool2D(3, strides=2, padding="same"),
        layers.Flatten(),
        layers.Dense(64),
        layers.Dense(num_classes, activation="softmax"),
    ], name=name)


def _ctr_inputs(num_fields, num_dense):
    ids = Input((num_fields,), dtype="int64", name="ids")
    dense = Input((num_dense,), name="dense") if num_dense else None
    return ids, dense


def _deep_tower(ids, dense, num_ids, embedding_dim, hidden, dropout):
    h = layers.Flatten()(layers.Embedding(num_ids, embedding_dim, name="deep_embedding")(ids))
    if dense is not None:
        h = layers.Concatenate()([h, dense])
    for units in hidden:
        h = layers.Dense(units, activation="relu")(h)
        if dropout:
            h = layers.Dropout(dropout)(h)
    return layers.Dense(1, name="deep_logit")(h)


def dnn_with_embeddings(num_ids, num_fields, num_dense=0, embedding_dim=8, hidden=(64, 32),
                        dropout=0.0, name="dnn_with_embeddings") -> Model:
    """Click-through DNN: every categorical field (hashed into ``num_ids`` ids) is embedded, the
    embeddings and the dense features feed a ReLU tower, and a sigmoid gives the probability.
    Inputs: ``[ids (n, num_fields) int64, dense (n, num_dense) float]`` (ids only if no dense)."""
    ids, dense = _ctr_inputs(num_fields, num_dense)
    logit = _deep_tower(ids, dense, num_ids, embedding_dim, hidden, dropout)
    out = layers.Activation("sigmoid", name="probability")(logit)
    return Model(inputs=[ids] + ([dense] if dense is not None else []), outputs=out, name=name)


def wide_and_deep(num_ids, num_fields, num_dense=0, embedding_dim=8, hidden=(64, 32),
                  dropout=0.0, name="wide_and_deep") -> Model:
    """Wide & Deep: the DNN over embeddings plus a wide linear part — one weight per id
    (an Embedding of width 1, which covers hashed crosses given as extra fields) and a linear
    term on the dense features — added to the deep logit before the sigmoid.
    Inputs: ``[ids (n, num_fields) int64, dense (n, num_dense) float]`` (ids only if no dense)."""
    ids, dense = _ctr_inputs(num_fields, num_dense)
    deep = _deep_tower(ids, dense, num_ids, embedding_dim, hidden, dropout)
    wide_ids = layers.Flatten()(layers.Embedding(num_ids, 1, embeddings_initializer="zeros",
                                                 name="wide_weights")(ids))
    wide_in = layers.Concatenate()([wide_ids, dense]) if dense is not None else wide_ids
    wide = layers.Dense(1, name="wide_logit")(wide_in)
    out = layers.Activation("sigmoid", name="probability")(layers.Add()([wide, deep]))
    return Model(inputs=[ids] + ([dense] if dense is not None else []), outputs=out, name=name)
