"""The model zoo: shapes and parameter counts from hand formulas, predictions, one training
step and a save/load round trip for each builder."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl.engine import zoo
from sparkdl.models import load_model


pytestmark = pytest.mark.usefixtures("seeded")


def conv_params(c_in, filters, k):
    return filters * c_in * k * k + filters


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


# ---- shapes and parameter counts ------------------------------------------------------------
def test_mlp_shapes_and_params():
    model = zoo.mlp(input_dim=20, hidden=(16, 8), num_classes=3)
    assert [layer.output_shape for layer in model.layers] == [(16,), (8,), (3,)]
    assert model.count_params() == dense_params(20, 16) + dense_params(16, 8) + dense_params(8, 3)
    assert model.layers[-1].activation.name == "softmax"
    default = zoo.mlp()
    assert default.count_params() == dense_params(784, 256) + dense_params(256, 128) + dense_params(128, 10)
    binary = zoo.mlp(input_dim=5, hidden=(4,), num_classes=1, dropout=0.5)
    assert binary.output_shape == (1,)
    assert binary.layers[-1].activation.name == "sigmoid"
    assert [type(layer).__name__ for layer in binary.layers] == ["Dense", "Dropout", "Dense"]
    assert binary.count_params() == dense_params(5, 4) + dense_params(4, 1)


def test_lenet_shapes_and_params():
    model = zoo.lenet()
    # conv 1->20 5x5: 28 -> 24; pool 2 -> 12; conv 20->50 5x5 -> 8; pool -> 4; 50*4*4 = 800
    expected_shapes = [(20, 24, 24), (20, 12, 12), (50, 8, 8), (50, 4, 4), (800,), (500,), (10,)]
    assert [layer.output_shape for layer in model.layers] == expected_shapes
    expected_params = [conv_params(1, 20, 5), 0, conv_params(20, 50, 5), 0, 0,
                       dense_params(800, 500), dense_params(500, 10)]
    assert [layer.count_params() for layer in model.layers] == expected_params
    assert model.count_params() == 431080 == sum(expected_params)
    assert model.layers[0].params["kernel"].shape == (20, 1, 5, 5)
    assert model.layers[2].params["kernel"].shape == (50, 20, 5, 5)


def test_lenet_other_input_shape():
    model = zoo.lenet(input_shape=(3, 32, 32), num_classes=4)
    # 32 -> 28 -> 14 -> 10 -> 5: 50 * 5 * 5 = 1250 features
    assert model.layers[4].output_shape == (1250,)
    assert model.output_shape == (4,)
    assert model.count_params() == (conv_params(3, 20, 5) + conv_params(20, 50, 5)
                                    + dense_params(1250, 500) + dense_params(500, 4))


def test_cifar_quick_shapes_and_params():
    model = zoo.cifar_quick()
    names = [type(layer).__name__ for layer in model.layers]
    assert names == ["Conv2D", "MaxPool2D", "ReLU", "Conv2D", "AvgPool2D", "Conv2D", "AvgPool2D",
                     "Flatten", "Dense", "Dense"]
    # 32 -> conv 5x5 pad 2 -> 32 -> max 3/2 -> 16 -> conv -> 16 -> avg 3/2 -> 8 -> conv 64 -> 8
    # -> avg 3/2 -> 4 -> 64*4*4 = 1024 -> 64 -> 10
    expected_shapes = [(32, 32, 32), (32, 16, 16), (32, 16, 16), (32, 16, 16), (32, 8, 8),
                       (64, 8, 8), (64, 4, 4), (1024,), (64,), (10,)]
    assert [layer.output_shape for layer in model.layers] == expected_shapes
    expected_params = [conv_params(3, 32, 5), 0, 0, conv_params(32, 32, 5), 0, conv_params(32, 64, 5),
                       0, 0, dense_params(1024, 64), dense_params(64, 10)]
    assert [layer.count_params() for layer in model.layers] == expected_params
    assert model.count_params() == 145578 == sum(expected_params)


@pytest.mark.parametrize("num_dense", [3, 0])
def test_dnn_with_embeddings_shapes_and_params(num_dense):
    model = zoo.dnn_with_embeddings(num_ids=50, num_fields=4, num_dense=num_dense, embedding_dim=5,
                                    hidden=(8, 4))
    assert model.output_shape == (1,)
    assert len(model._input_specs()) == (2 if num_dense else 1)
    expected = 50 * 5 + dense_params(4 * 5 + num_dense, 8) + dense_params(8, 4) + dense_params(4, 1)
    assert model.count_params() == expected


@pytest.mark.parametrize("num_dense", [3, 0])
def test_wide_and_deep_shapes_and_params(num_dense):
    model = zoo.wide_and_deep(num_ids=50, num_fields=4, num_dense=num_dense, embedding_dim=5,
                              hidden=(8, 4))
    assert model.output_shape == (1,)
    deep = 50 * 5 + dense_params(4 * 5 + num_dense, 8) + dense_params(8, 4) + dense_params(4, 1)
    wide = 50 * 1 + dense_params(4 + num_dense, 1)
    assert model.count_params() == deep + wide
    by_name = {layer.name: layer for layer in model.layers}
    assert np.all(by_name["wide_weights"].params["embeddings"] == 0)  # zeros initializer


# ---- predict, train, save/load --------------------------------------------------------------
def ctr_inputs(rng, n, num_ids, num_fields, num_dense):
    ids = rng.integers(0, num_ids, size=(n, num_fields))
    if not num_dense:
        return ids
    return [ids, rng.normal(size=(n, num_dense)).astype(np.float32)]


CASES = {
    "mlp": (lambda: zoo.mlp(input_dim=12, hidden=(8,), num_classes=4),
            lambda rng, n: rng.normal(size=(n, 12)).astype(np.float32), "softmax"),
    "mlp_binary": (lambda: zoo.mlp(input_dim=6, hidden=(5,), num_classes=1, dropout=0.2),
                   lambda rng, n: rng.normal(size=(n, 6)).astype(np.float32), "sigmoid"),
    "lenet": (lambda: zoo.lenet(), lambda rng, n: rng.random((n, 1, 28, 28), dtype=np.float32), "softmax"),
    "cifar_quick": (lambda: zoo.cifar_quick(),
                    lambda rng, n: rng.normal(size=(n, 3, 32, 32)).astype(np.float32), "softmax"),
    "dnn_with_embeddings": (lambda: zoo.dnn_with_embeddings(30, 3, num_dense=2, hidden=(6,)),
                            lambda rng, n: ctr_inputs(rng, n, 30, 3, 2), "sigmoid"),
    "dnn_ids_only": (lambda: zoo.dnn_with_embeddings(30, 3, hidden=(6,), dropout=0.1),
                     lambda rng, n: ctr_inputs(rng, n, 30, 3, 0), "sigmoid"),
    "wide_and_deep": (lambda: zoo.wide_and_deep(30, 3, num_dense=2, hidden=(6, 4)),
                      lambda rng, n: ctr_inputs(rng, n, 30, 3, 2), "sigmoid"),
    "wide_and_deep_ids_only": (lambda: zoo.wide_and_deep(30, 3, hidden=(6,)),
                               lambda rng, n: ctr_inputs(rng, n, 30, 3, 0), "sigmoid"),
}


def targets(kind, n, classes, rng):
    if kind == "softmax":
        return rng.integers(0, classes, size=n)
    return rng.integers(0, 2, size=(n, 1)).astype(np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_predict_train_save_load(name, tmp_path):
    build, data, kind = CASES[name]
    rng = np.random.default_rng(0)
    model = build()
    x = data(rng, 3)
    p = model.predict(x)
    assert p.shape == (3,) + model.output_shape
    assert np.all(np.isfinite(p))
    if kind == "softmax":
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        assert np.all(p >= 0)
    else:
        assert p.shape[1] == 1 and np.all((p > 0) & (p < 1))

    loss_name = "sparse_categorical_crossentropy" if kind == "softmax" else "binary_crossentropy"
    model.compile(optimizer="adam", loss=loss_name)
    before = model.get_flat_weights()
    y = targets(kind, 3, model.output_shape[-1], rng)
    loss = model.train_on_batch(x, y)
    assert isinstance(loss, float) and np.isfinite(loss) and loss > 0
    assert np.any(model.get_flat_weights() != before), "one step should change the weights"

    path = tmp_path / f"{name}.sdl"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.count_params() == model.count_params()
    x2 = data(rng, 4)
    np.testing.assert_array_equal(loaded.predict(x2), model.predict(x2))
