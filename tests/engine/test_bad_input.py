"""Bad input fails early with a ValueError/TypeError naming what was expected and received,
and leaves the model as it was."""
import numpy as np
import pytest

from sparkdl import callbacks, layers, optimizers
from sparkdl.engine import NotCompiledError, TrainingDivergedError
from sparkdl.models import Input, Sequential
from tests.helpers import assert_same_weights, regression_data, same_weights


def _x(n=8, d=3):
    """Features only: most checks here fail before any target is read."""
    return regression_data(n, d)[0]


def _regressor(compile=True):
    model = Sequential([Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    if compile:
        model.compile(optimizers.SGD(0.01), "mse")
    return model


def _classifier(loss="sparse_categorical_crossentropy", units=3, activation="softmax"):
    model = Sequential([Input((3,)), layers.Dense(units, activation=activation)])
    model.compile(optimizers.SGD(0.1), loss)
    return model


# ---- x ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["fit", "predict", "evaluate", "train_on_batch"])
def test_input_width_mismatch(call):
    model = _regressor()
    x, y = _x(d=5), np.zeros(8, np.float32)
    args = (x,) if call == "predict" else (x, y)
    kwargs = {"verbose": 0} if call == "fit" else {}
    with pytest.raises(ValueError, match=rf"{call}: expected x of shape \(None, 3\), received \(8, 5\)"):
        getattr(model, call)(*args, **kwargs)


def test_input_without_batch_axis():
    with pytest.raises(ValueError, match=r"expected x of shape \(None, 3\), received \(3,\)"):
        _regressor().predict(np.zeros(3, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("call", ["fit", "predict", "evaluate"])
def test_non_finite_x(bad, call):
    model = _regressor()
    before = model.get_weights()
    x = _x()
    x[3, 1] = bad
    x[5, 0] = bad
    args = (x,) if call == "predict" else (x, np.zeros(8, np.float32))
    kwargs = {"verbose": 0} if call == "fit" else {}
    with pytest.raises(ValueError, match=f"{call}: x contains 2 NaN or inf values; expected finite"):
        getattr(model, call)(*args, **kwargs)
    assert same_weights(model, before)


def test_string_x_is_type_error():
    model = _regressor()
    x = np.array([["a", "b", "c"], ["d", "e", "f"]])
    with pytest.raises(TypeError, match="fit: expected x to hold numbers, received dtype <U1"):
        model.fit(x, np.zeros(2), verbose=0)
    with pytest.raises(TypeError, match="predict: expected x to hold numbers, received dtype object"):
        model.predict(np.array([[1.0, "x", None]], dtype=object))


def test_x_none_is_type_error():
    with pytest.raises(TypeError, match="expected x to be an array, received None"):
        _regressor().predict(None)


def test_string_y_is_type_error():
    with pytest.raises(TypeError, match="mse: expected numeric targets, received dtype <U"):
        _regressor().fit(_x(n=2), np.array(["a", "b"]), verbose=0)


def test_non_finite_y():
    y = np.zeros(8, np.float32)
    y[2] = np.nan
    with pytest.raises(ValueError, match="mse: targets contain NaN or inf"):
        _regressor().fit(_x(), y, verbose=0)


def test_y_none():
    with pytest.raises(ValueError, match="fit: expected targets y, received None"):
        _regressor().fit(_x(), None, verbose=0)


# ---- y against the loss ----------------------------------------------------------------------
@pytest.mark.parametrize("ids,fragment", [
    ([0, 1, 3, 2], r"expected class ids in \[0, 2\] for a model with 3 outputs, received values in \[0, 3\]"),
    ([0, -1, 2, 1], r"expected class ids in \[0, 2\] for a model with 3 outputs, received values in \[-1, 2\]"),
    ([0.0, 1.5, 2.0, 1.0], "expected integer class ids, received non-integer values"),
])
def test_sparse_categorical_bad_ids(ids, fragment):
    model = _classifier()
    before = model.get_weights()
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy: " + fragment):
        model.fit(_x(n=4), np.array(ids), verbose=0)
    assert same_weights(model, before)


def test_sparse_categorical_one_hot_rows_rejected():
    with pytest.raises(ValueError, match=r"expected integer class ids of shape \(n,\), received shape \(4, 3\)"):
        _classifier().fit(_x(n=4), np.eye(3)[[0, 1, 2, 0]], verbose=0)


def test_sparse_categorical_float_whole_ids_accepted():
    """Class ids given as whole floats train exactly like the same ids as ints."""
    x = _x(n=12)
    ids = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    as_floats, as_ints = _classifier(), _classifier()
    as_ints.set_weights(as_floats.get_weights())
    start = as_ints.get_weights()
    as_floats.fit(x, ids.astype(np.float64), epochs=2, batch_size=4, seed=3, verbose=0)
    as_ints.fit(x, ids, epochs=2, batch_size=4, seed=3, verbose=0)
    assert_same_weights(as_floats, as_ints)
    assert not same_weights(as_ints, start)
    assert as_floats.history.history == as_ints.history.history


def test_binary_crossentropy_label_out_of_range():
    model = _classifier("binary_crossentropy", units=1, activation="sigmoid")
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"binary_crossentropy: expected targets in \[0, 1\], "
                                         r"received values in \[0, 2\]"):
        model.fit(_x(n=4), np.array([0, 1, 2, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"received values in \[-1, 1\]"):
        model.train_on_batch(_x(n=4), np.array([0, 1, -1, 1]))
    assert same_weights(model, before)


@pytest.mark.parametrize("width", [2, 4])
def test_categorical_rows_of_wrong_width(width):
    model = _classifier("categorical_crossentropy")
    with pytest.raises(ValueError, match=rf"categorical_crossentropy: expected targets of shape "
                                         rf"\(None, 3\) \(the model's output\), received \(4, {width}\)"):
        model.fit(_x(n=4), np.eye(width, dtype=np.float32)[[0, 1, 0, 1]], verbose=0)


def test_categorical_negative_entries():
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    y[1, 0] = -0.5
    with pytest.raises(ValueError, match="expected one-hot or probability rows, received a negative value -0.5"):
        _classifier("categorical_crossentropy").evaluate(_x(n=4), y)


def test_mse_targets_of_wrong_shape():
    with pytest.raises(ValueError, match=r"mse: expected targets of shape \(None, 1\) \(the model's output\), "
                                         r"received \(8, 2\)"):
        _regressor().fit(_x(), np.zeros((8, 2)), verbose=0)


@pytest.mark.parametrize("call", ["fit", "evaluate", "train_on_batch"])
def test_len_y_differs_from_len_x(call):
    model = _regressor()
    kwargs = {"verbose": 0} if call == "fit" else {}
    with pytest.raises(ValueError, match=r"expected len\(y\) == len\(x\), received len\(x\)=8 and len\(y\)=5"):
        getattr(model, call)(_x(), np.zeros(5, np.float32), **kwargs)


# ---- not compiled ----------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["fit", "evaluate", "train_on_batch", "compute_gradients"])
def test_not_compiled(call):
    model = _regressor(compile=False)
    with pytest.raises(NotCompiledError, match=f"{call}: model '.*' must be compiled first") as info:
        getattr(model, call)(_x(), np.zeros(8, np.float32))
    assert isinstance(info.value, ValueError)
    # predict needs no compile
    assert model.predict(_x()).shape == (8, 1)


# ---- unknown names and bad arguments ---------------------------------------------------------
def test_unknown_names():
    with pytest.raises(ValueError, match="unknown activation 'relux'; expected one of .*'relu'"):
        layers.Dense(3, activation="relux")
    model = _regressor(compile=False)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw2'; expected one of .*'adam'"):
        model.compile(optimizer="adamw2", loss="mse")
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of .*'mse'"):
        model.compile(optimizer="sgd", loss="hinge")
    with pytest.raises(ValueError, match="unknown metric 'f1'; expected one of .*'accuracy'"):
        model.compile(optimizer="sgd", loss="mse", metrics=["f1"])
    with pytest.raises(ValueError, match="expected distinct metrics, received \\['accuracy', 'accuracy'\\]"):
        model.compile(optimizer="sgd", loss="mse", metrics=["acc", "accuracy"])


def test_wrong_types_for_names():
    model = _regressor(compile=False)
    with pytest.raises(TypeError, match="expected an optimizer name .* received int: 3"):
        model.compile(optimizer=3, loss="mse")
    with pytest.raises(TypeError, match="expected a loss name .* received float"):
        model.compile(optimizer="sgd", loss=1.0)
    with pytest.raises(TypeError, match="expected an activation name .* received int"):
        layers.Dense(2, activation=7)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, None])
def test_bad_batch_size(batch_size):
    model = _regressor()
    with pytest.raises(ValueError,
                       match=f"fit: expected batch_size >= 1 \\(an int\\), received batch_size={batch_size!r}"):
        model.fit(_x(), np.zeros(8), batch_size=batch_size, verbose=0)
    with pytest.raises(ValueError, match="predict: expected batch_size >= 1"):
        model.predict(_x(), batch_size=batch_size)
    with pytest.raises(ValueError, match="evaluate: expected batch_size >= 1"):
        model.evaluate(_x(), np.zeros(8), batch_size=batch_size)


@pytest.mark.parametrize("epochs", [-1, 1.5, "2"])
def test_bad_epochs(epochs):
    with pytest.raises(ValueError, match=f"fit: expected epochs >= 0 \\(an int\\), received epochs={epochs!r}"):
        _regressor().fit(_x(), np.zeros(8), epochs=epochs, verbose=0)


@pytest.mark.parametrize("split", [1.0, -0.2, 1.5])
def test_bad_validation_split(split):
    with pytest.raises(ValueError, match=f"expected 0 <= validation_split < 1, received {split!r}"):
        _regressor().fit(_x(), np.zeros(8), validation_split=split, verbose=0)


def test_validation_split_and_data_together():
    x = _x()
    with pytest.raises(ValueError, match="validation_data or validation_split, not both"):
        _regressor().fit(x, np.zeros(8), validation_split=0.5, validation_data=(x, np.zeros(8)), verbose=0)


def test_bad_validation_data_checked_like_training_data():
    model = _regressor()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"fit\(validation_data\): expected x of shape \(None, 3\), received \(4, 2\)"):
        model.fit(_x(), np.zeros(8), validation_data=(_x(n=4, d=2), np.zeros(4)), verbose=0)
    assert same_weights(model, before)


def test_bad_verbose():
    with pytest.raises(ValueError, match="expected verbose in \\(0, 1, 2\\), received verbose=3"):
        _regressor().fit(_x(), np.zeros(8), verbose=3)


def test_compile_loss_none():
    with pytest.raises(ValueError, match="compile: expected a loss .* received loss=None"):
        _regressor(compile=False).compile(optimizer="sgd")


def test_bad_optimizer_hyperparameters():
    with pytest.raises(ValueError, match="SGD: expected learning_rate >= 0, received learning_rate=-0.1"):
        optimizers.SGD(learning_rate=-0.1)
    with pytest.raises(ValueError, match="Adam: expected beta_1 >= 0 and < 1, received beta_1=1.0"):
        optimizers.Adam(beta_1=1.0)


# ---- set_weights -----------------------------------------------------------------------------
def test_set_weights_wrong_count():
    model = _regressor()
    before = model.get_weights()
    with pytest.raises(ValueError, match="set_weights: model '.*' expects 4 arrays, received 3"):
        model.set_weights(before[:3])
    with pytest.raises(ValueError, match="expects 4 arrays, received 5"):
        model.set_weights(before + [np.zeros(1)])


def test_set_weights_wrong_shape_changes_nothing():
    model = _regressor()
    before = model.get_weights()
    new = [w + 1 for w in before]
    new[2] = np.zeros((1, 4), np.float32)  # transposed kernel of the second Dense
    with pytest.raises(ValueError, match=r"set_weights: array 2 should have shape \(4, 1\), received \(1, 4\)"):
        model.set_weights(new)
    assert same_weights(model, before)  # the arrays before the bad one were not written either


def test_set_flat_weights_wrong_size():
    model = _regressor()
    with pytest.raises(ValueError, match=r"expected a flat vector of shape \(21,\), received \(20,\)"):
        model.set_flat_weights(np.zeros(20))


# ---- divergence ------------------------------------------------------------------------------
def test_training_diverged_error_keeps_finite_weights_from_before_the_failing_step():
    class Snap(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last = None
            self.steps = 0

        def on_batch_begin(self, batch, logs=None):
            self.last = self.model.get_weights()
            self.steps += 1

    x = _x(n=16)
    y = np.full((16, 1), 1e6, np.float32)
    model = Sequential([Input((3,)), layers.Dense(1)])
    model.compile(optimizers.SGD(learning_rate=1e6), "mse")
    snap = Snap()
    with np.errstate(all="ignore"), \
            pytest.raises(TrainingDivergedError, match="the loss became (inf|nan) at optimizer step") as info:
        model.fit(x, y, epochs=50, batch_size=16, shuffle=False, verbose=0, callbacks=[snap])
    assert isinstance(info.value, FloatingPointError)
    assert snap.steps >= 2  # at least one step went through before the loss blew up
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert same_weights(model, snap.last)
    assert model.optimizer.iterations == snap.steps - 1


def test_training_diverged_error_from_train_on_batch():
    x = _x(n=16)
    y = np.full((16, 1), 1e6, np.float32)
    model = Sequential([Input((3,)), layers.Dense(1)])
    model.compile(optimizers.SGD(learning_rate=1e6), "mse")
    with np.errstate(all="ignore"):
        for step in range(50):
            before = model.get_weights()
            try:
                model.train_on_batch(x, y)
            except TrainingDivergedError as exc:
                assert f"at optimizer step {step}" in str(exc)
                break
        else:
            pytest.fail("training did not diverge")
    assert step >= 1
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert same_weights(model, before)


# ---- no partial side effects -----------------------------------------------------------------
def test_failing_fit_leaves_weights_and_optimizer_untouched():
    model = _classifier()
    model.fit(_x(n=4), np.array([0, 1, 2, 1]), verbose=0)
    before = model.get_weights()
    iterations = model.optimizer.iterations
    history = model.history
    x = _x(n=6)
    with pytest.raises(ValueError, match="class ids"):
        model.fit(x, np.array([0, 1, 2, 1, 2, 7]), epochs=3, verbose=0)
    with pytest.raises(ValueError, match="len"):
        model.fit(x, np.array([0, 1, 2]), epochs=3, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, np.array([0, 1, 2, 1, 2, 0]), batch_size=0, verbose=0)
    assert same_weights(model, before)
    assert model.optimizer.iterations == iterations
    assert model.history is history
