"""Sequential basics (``sparkdl.engine.model``, ``sparkdl.engine.sequential``): structure,
weights and the flat buffer, building, training steps, determinism, validation split, batch
order, user layers, seeding."""
import numpy as np
import pytest

import sparkdl
from sparkdl import callbacks, layers, optimizers
from sparkdl.engine.layers.core import InputLayer
from sparkdl.models import Input, Sequential
from tests.helpers import classification_data, mlp, one_hot, regression_data, same_weights


def _manual_forward(model, x):
    w = [v.astype(np.float64) for v in model.get_weights()]
    h = np.tanh(x @ w[0] + w[1])
    h = np.maximum(h @ w[2] + w[3], 0)
    return h @ w[4] + w[5]


# ---- structure -------------------------------------------------------------------------------
def test_layers_exclude_the_input_and_are_a_copy():
    model = mlp(sgd=0.05)
    assert [l.name for l in model.layers] == ["hidden_a", "hidden_b", "out"]
    assert not any(isinstance(l, InputLayer) for l in model.layers)
    model.layers.append(layers.Dense(3))
    assert len(model.layers) == 3


def test_count_params_matches_hand_formula():
    model = mlp(dropout=0.5, sgd=0.05)
    expected = (5 * 8 + 8) + (8 * 4 + 4) + (4 * 2 + 2)
    assert model.count_params() == expected == 94
    assert model.flat_weights.size == expected
    assert [l.count_params() for l in model.layers] == [48, 0, 36, 10]
    no_bias = Sequential([Input((5,)), layers.Dense(3, use_bias=False)])
    assert no_bias.count_params() == 15


def test_summary_lists_layers_shapes_and_total():
    model = mlp(dropout=0.5, sgd=0.05)
    text = model.summary()
    assert isinstance(text, str)
    for fragment in ("mlp", "hidden_a (Dense)", "drop (Dropout)", "hidden_b (Dense)", "out (Dense)",
                     "(None, 8)", "(None, 2)", "Total params: 94", "Trainable params: 94",
                     "Non-trainable params: 0"):
        assert fragment in text, fragment
    rows = [line for line in text.splitlines() if line.startswith(("hidden_a", "drop", "hidden_b", "out"))]
    assert [row.split()[-1] for row in rows] == ["48", "0", "36", "10"]


def test_sequential_add_checks():
    dense = layers.Dense(2)
    model = Sequential([Input((3,)), dense])
    with pytest.raises(ValueError, match="already in the model"):
        model.add(dense)
    with pytest.raises(ValueError, match="an Input must come first"):
        model.add(Input((2,)))
    with pytest.raises(TypeError, match="expected a Layer, received str"):
        model.add("dense")


# ---- weights and the flat buffer -------------------------------------------------------------
def test_get_weights_order_kernel_then_bias_per_dense():
    model = mlp(dropout=0.5, sgd=0.05)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(5, 8), (8,), (8, 4), (4,), (4, 2), (2,)]
    dense = [l for l in model.layers if isinstance(l, layers.Dense)]
    expected = [a for l in dense for a in (l.params["kernel"], l.params["bias"])]
    assert same_weights(model.get_weights(), expected)


def test_get_weights_returns_copies():
    model = mlp(sgd=0.05)
    x, _ = regression_data()
    before = model.predict(x)
    weights = model.get_weights()
    for w in weights:
        assert not np.shares_memory(w, model.flat_weights)
        w += 10.0
    assert np.array_equal(model.predict(x), before)


def test_trainable_weights_are_views_into_flat_weights():
    model = mlp(sgd=0.05)
    x, _ = regression_data()
    flat = model.flat_weights
    views = model.trainable_weights
    assert sum(v.size for v in views) == flat.size
    offset = 0
    for v in views:
        assert np.shares_memory(v, flat)
        assert np.array_equal(v.reshape(-1), flat[offset:offset + v.size])
        offset += v.size
    before = model.predict(x)
    flat[-2:] += 1.0  # the output bias is the last slot
    after = model.predict(x)
    np.testing.assert_allclose(after, before + 1.0, rtol=1e-6, atol=1e-6)
    assert np.array_equal(views[-1], model.layers[-1].params["bias"])
    flat[:] = 0
    assert np.array_equal(model.predict(x), np.zeros((len(x), 2), np.float32))


def test_set_and_get_flat_weights_round_trip():
    model = mlp(sgd=0.05)
    x, _ = regression_data()
    vector = np.random.default_rng(3).normal(size=model.count_params()).astype(np.float32)
    model.set_flat_weights(vector)
    got = model.get_flat_weights()
    assert got.dtype == np.float32 and np.array_equal(got, vector)
    got[:] = 0  # a copy
    assert np.array_equal(model.get_flat_weights(), vector)
    np.testing.assert_allclose(model.predict(x), _manual_forward(model, x), rtol=1e-5, atol=1e-5)
    # get_weights sees the same values, split per array.
    assert np.array_equal(np.concatenate([w.reshape(-1) for w in model.get_weights()]), vector)


def test_set_weights_then_predict_matches_manual_forward():
    model = mlp(dropout=0.5, sgd=0.05)
    rng = np.random.default_rng(4)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    x, _ = regression_data()
    np.testing.assert_allclose(model.predict(x), _manual_forward(model, x), rtol=1e-5, atol=1e-5)


# ---- building and inference ------------------------------------------------------------------
def test_deferred_build_on_first_fit():
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(2)])
    assert not model.built
    with pytest.raises(ValueError, match="not built yet"):
        model.count_params()
    model.compile(optimizers.SGD(0.01), "mse")
    x, y = regression_data(d=6)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.built
    assert model.layers[0].params["kernel"].shape == (6, 4)
    assert model.count_params() == 6 * 4 + 4 + 4 * 2 + 2
    with pytest.raises(ValueError, match=r"expected x of shape \(None, 6\), received \(3, 5\)"):
        model.predict(np.zeros((3, 5), np.float32))


def test_deferred_build_on_first_predict():
    model = Sequential([layers.Dense(3)])
    out = model.predict(np.ones((2, 7)))
    assert out.shape == (2, 3) and model.count_params() == 7 * 3 + 3


def test_input_shape_on_first_layer_builds_immediately():
    model = Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(1)])
    assert model.built and model.count_params() == 4 * 3 + 3 + 3 + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_predict_returns_float32_of_shape_n_out(dtype):
    model = mlp(sgd=0.05)
    x = np.arange(35).reshape(7, 5).astype(dtype) / (1 if dtype == np.int64 else 10)
    out = model.predict(x)
    assert out.dtype == np.float32 and out.shape == (7, 2)
    np.testing.assert_allclose(out, _manual_forward(model, x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    # The batch size of predict does not change the result (up to BLAS blocking rounding).
    np.testing.assert_allclose(model.predict(x, batch_size=3), out, rtol=1e-6, atol=1e-7)


def test_dropout_is_inactive_at_inference():
    model = mlp(dropout=0.9, sgd=0.05)
    x, y = regression_data()
    a, b = model.predict(x), model.predict(x)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, _manual_forward(model, x), rtol=1e-5, atol=1e-5)
    result = model.evaluate(x, y)
    assert result["loss"] == pytest.approx(np.mean((_manual_forward(model, x) - y) ** 2), rel=1e-5)


# ---- single steps ----------------------------------------------------------------------------
def test_train_on_batch_returns_loss_before_step_and_changes_weights():
    model = mlp(sgd=0.05)
    x, y = regression_data()
    before = model.get_weights()
    expected = np.mean((_manual_forward(model, x) - y) ** 2)
    loss = model.train_on_batch(x, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert not same_weights(model.get_weights(), before)
    assert model.optimizer.iterations == 1
    assert model.train_on_batch(x, y) < loss  # a small SGD step lowers the batch loss


def test_compute_gradients_takes_no_step_and_matches_hand_formula():
    model = Sequential([Input((5,)), layers.Dense(2)])
    model.compile(optimizers.SGD(0.1), "mse")
    x, y = regression_data()
    before = model.get_weights()
    loss, grads = model.compute_gradients(x, y)
    assert same_weights(model.get_weights(), before)
    assert model.optimizer.iterations == 0
    w, b = (v.astype(np.float64) for v in before)
    residual = x @ w + b - y
    assert loss == pytest.approx(np.mean(residual ** 2), rel=1e-5)
    scale = 2.0 / residual.size
    np.testing.assert_allclose(grads[0], scale * x.T @ residual, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1], scale * residual.sum(axis=0), rtol=1e-4, atol=1e-6)
    # Returned gradients are copies, aligned with trainable_weights.
    assert [g.shape for g in grads] == [t.shape for t in model.trainable_weights]
    grads[0][:] = 0
    _, again = model.compute_gradients(x, y)
    assert np.abs(again[0]).sum() > 0


def test_one_sgd_step_equals_weights_minus_lr_times_gradients():
    model = mlp(sgd=0.05)
    x, y = regression_data()
    before = model.get_weights()
    _, grads = model.compute_gradients(x, y)
    model.train_on_batch(x, y)
    for w0, g, w1 in zip(before, grads, model.get_weights()):
        np.testing.assert_allclose(w1, w0 - np.float32(0.05) * g, rtol=1e-6, atol=1e-7)


# ---- fit -------------------------------------------------------------------------------------
def test_fit_same_seed_same_start_gives_identical_weights_including_dropout():
    x, y = regression_data(n=40)
    start = mlp(dropout=0.5, sgd=0.05).get_weights()

    def run(seed):
        model = mlp(dropout=0.5, sgd=0.05)
        model.set_weights(start)
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=seed)
        return model.get_weights()

    first, second = run(7), run(7)
    assert same_weights(first, second)
    assert not same_weights(first, run(8))  # a different seed: different shuffles and masks


def test_fit_seed_fixes_dropout_masks_even_without_shuffle():
    x, y = regression_data(n=16)
    start = mlp(dropout=0.5, sgd=0.05).get_weights()
    results = []
    for seed in (1, 1, 2):
        model = mlp(dropout=0.5, sgd=0.05)
        model.set_weights(start)
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, seed=seed)
        results.append(model.get_weights())
    assert same_weights(results[0], results[1])
    assert not same_weights(results[0], results[2])


def test_validation_split_holds_out_the_last_rows():
    x, y = regression_data(n=20)
    model = mlp(sgd=0.05)
    reference = mlp(sgd=0.05)
    reference.set_weights(model.get_weights())
    history = model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0, validation_split=0.25)
    reference.train_on_batch(x[:15], y[:15])
    assert same_weights(model.get_weights(), reference.get_weights())
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[15:], y[15:])["loss"], rel=1e-6)
    assert history.history["loss"][0] != pytest.approx(history.history["val_loss"][0])


def test_validation_data():
    x, y = regression_data(n=20)
    xv, yv = regression_data(n=6, seed=5)
    model = mlp(sgd=0.05)
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(xv, yv))
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv)["loss"], rel=1e-6)


def test_shuffle_false_visits_batches_in_order():
    x, y = regression_data(n=12)
    model = mlp(sgd=0.05)
    reference = mlp(sgd=0.05)
    shuffled = mlp(sgd=0.05)
    reference.set_weights(model.get_weights())
    shuffled.set_weights(model.get_weights())
    model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for _ in range(2):
        for a in range(0, 12, 4):
            reference.train_on_batch(x[a:a + 4], y[a:a + 4])
    assert same_weights(model.get_weights(), reference.get_weights())
    shuffled.fit(x, y, epochs=2, batch_size=4, shuffle=True, verbose=0, seed=0)
    assert not same_weights(shuffled.get_weights(), reference.get_weights())


def test_last_batch_may_be_short_and_loss_is_the_example_mean():
    seen = []

    class Sizes(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(logs["loss"])

    x, y = regression_data(n=10)
    model = mlp(sgd=0.0)  # no movement: every batch loss is from the same weights
    expected = np.mean((_manual_forward(model, x) - y) ** 2)
    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0, callbacks=[Sizes()])
    assert len(seen) == 3
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_epochs_zero_trains_nothing():
    x, y = regression_data()
    model = mlp(sgd=0.05)
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=0)
    assert history.history == {} and same_weights(model.get_weights(), before)


# ---- a user layer that rebinds its gradient --------------------------------------------------
class RebindScale(layers.Layer):
    """``x * w``; backward assigns a NEW array to self.grads['w'] (no in-place write)."""

    def build(self, input_shape):
        self.add_weight("w", (input_shape[-1],), initializer="ones")

    def forward(self, x, training=False):
        if training:
            self._x = x
        return x * self.params["w"]

    def backward(self, dLdy):
        self.grads["w"] = (dLdy * self._x).sum(axis=0)
        return dLdy * self.params["w"]


def test_custom_layer_rebinding_grads_trains_correctly():
    x, y = regression_data(n=6, d=3, out=3)
    model = Sequential([Input((3,)), RebindScale()])
    lr = 0.1
    model.compile(optimizers.SGD(learning_rate=lr), "mse")
    w = np.array([0.5, -1.0, 2.0], np.float32)
    model.set_weights([w])
    for _ in range(3):  # several steps: the rebinding must be picked up every time
        w64 = w.astype(np.float64)
        grad = 2.0 / y.size * ((x * w64 - y) * x).sum(axis=0)
        _, grads = model.compute_gradients(x, y)
        np.testing.assert_allclose(grads[0], grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model._params.grads, grad, rtol=1e-5, atol=1e-7)
        model.train_on_batch(x, y)
        expected = w64 - lr * grad
        np.testing.assert_allclose(model.get_weights()[0], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model.flat_weights, expected, rtol=1e-5, atol=1e-7)
        w = model.get_weights()[0]


def test_custom_layer_rebinding_grads_inside_an_mlp():
    x, y = regression_data(n=8, d=5, out=2)
    model = Sequential([Input((5,)), layers.Dense(4, activation="tanh"), RebindScale(), layers.Dense(2)])
    model.compile(optimizers.SGD(learning_rate=0.05), "mse")
    _, grads = model.compute_gradients(x, y)
    # d loss / d w of the scale layer, by hand from the model's own weights.
    k1, b1, s, k2, b2 = (v.astype(np.float64) for v in model.get_weights())
    h = np.tanh(x @ k1 + b1)
    out = (h * s) @ k2 + b2
    dout = 2.0 * (out - y) / y.size
    expected = ((dout @ k2.T) * h).sum(axis=0)
    np.testing.assert_allclose(grads[2], expected, rtol=1e-4, atol=1e-7)
    before = model.get_weights()
    model.train_on_batch(x, y)
    np.testing.assert_allclose(model.get_weights()[2], before[2] - np.float32(0.05) * grads[2],
                               rtol=1e-6, atol=1e-7)


# ---- seeding ---------------------------------------------------------------------------------
def test_set_random_seed_makes_construction_reproducible():
    sparkdl.set_random_seed(11)
    first = mlp().get_weights()
    sparkdl.set_random_seed(11)
    second = mlp().get_weights()
    sparkdl.set_random_seed(12)
    third = mlp().get_weights()
    assert same_weights(first, second)
    assert not same_weights(first, third)
    # Without reseeding, the next model differs from the previous one.
    assert not same_weights(mlp().get_weights(), third)


def test_set_random_seed_validates():
    with pytest.raises(ValueError, match="expected a non-negative int, received -1"):
        sparkdl.set_random_seed(-1)


# ---- label forms -----------------------------------------------------------------------------
def test_categorical_crossentropy_trains_on_class_ids_as_on_one_hot_rows():
    """The same fit from class ids and from their one-hot rows: bit-identical weights, and the
    same loss and accuracy in the history; evaluate's accuracy is the share of argmax hits."""
    x, y = classification_data(n=40, d=5, classes=3)

    def trained(targets):
        sparkdl.set_random_seed(3)
        model = mlp(layers.Dense(3, activation="softmax", name="out"), sgd=0.1,
                    loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, targets, epochs=3, batch_size=8, seed=0, verbose=0)
        return model
    on_ids, on_rows = trained(y), trained(one_hot(y, 3))
    assert same_weights(on_ids, on_rows)
    assert on_ids.history.history == on_rows.history.history
    hits = np.mean(np.argmax(on_ids.predict(x), axis=1) == y)
    assert on_ids.evaluate(x, y)["accuracy"] == pytest.approx(hits)
    assert on_ids.evaluate(x, y) == on_rows.evaluate(x, one_hot(y, 3))
