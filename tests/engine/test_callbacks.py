"""Callbacks under the engine's fit: History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, and the progress output."""
import functools
import os

import numpy as np
import pytest

from sparkdl import callbacks, layers, optimizers
from sparkdl.models import Input, Sequential, load_model
from tests.helpers import regression_data, same_weights


# A learnable target: y = x @ [1, -2, 0.5] + 0.3.
_data = functools.partial(regression_data, n=40, d=3, out=1, linear=True)


def _model(lr=0.05, metrics=("mse",)):
    model = Sequential([Input((3,)), layers.Dense(4, activation="tanh"), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse", metrics=list(metrics))
    return model


class Script(callbacks.Callback):
    """Overwrites logs[key] with scripted values (so later callbacks see them) and records
    the weights at the end of every epoch."""

    def __init__(self, key=None, values=()):
        super().__init__()
        self.key, self.values = key, list(values)
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        if self.key is not None:
            logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


# ---- History ---------------------------------------------------------------------------------
def test_history_one_entry_per_epoch_for_loss_metrics_and_validation():
    x, y = _data()
    model = _model(metrics=["mse"])
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, validation_split=0.25, seed=0)
    assert history is model.history
    assert history.epoch == [0, 1, 2, 3]
    assert set(history.history) == {"loss", "mse", "val_loss", "val_mse"}
    for values in history.history.values():
        assert len(values) == 4 and all(isinstance(v, float) and np.isfinite(v) for v in values)
    # Validation entries are the model evaluated on the held-out tail after the last epoch.
    final = model.evaluate(x[30:], y[30:])
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.history["val_mse"][-1] == pytest.approx(final["mse"], rel=1e-6)
    # mse loss and mse metric agree on the training data seen during an epoch.
    assert history.history["loss"] == pytest.approx(history.history["mse"], rel=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_history_is_reset_by_each_fit():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=3, verbose=0)
    history = model.fit(x, y, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and history.epoch == [0, 1]


# ---- EarlyStopping ---------------------------------------------------------------------------
@pytest.mark.parametrize("patience,expected_epochs", [(0, 2), (1, 2), (2, 3), (4, 5)])
def test_early_stopping_on_constant_val_loss(patience, expected_epochs):
    # learning_rate=0: the weights never move, so val_loss is the same every epoch and only
    # the first epoch counts as an improvement. Keras semantics: stop once `patience` epochs
    # in a row have not improved (patience 0 and 1 both stop at the second epoch).
    x, y = _data()
    model = _model(lr=0.0)
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    history = model.fit(x, y, epochs=20, verbose=0, validation_data=(x[:10], y[:10]),
                        callbacks=[stopper])
    assert len(history.history["val_loss"]) == expected_epochs
    assert len(set(history.history["val_loss"])) == 1
    assert stopper.stopped_epoch == expected_epochs - 1
    assert model.stop_training is True


def test_early_stopping_does_not_stop_while_improving():
    script = Script("val_loss", [5.0 - i for i in range(6)])
    stopper = callbacks.EarlyStopping(patience=0)
    x, y = _data()
    history = _model().fit(x, y, epochs=6, verbose=0, callbacks=[script, stopper])
    assert history.history["val_loss"] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert stopper.stopped_epoch == 0


def test_early_stopping_restore_best_weights():
    values = [1.0, 0.5, 0.6, 0.7, 0.55, 0.1, 0.1]
    script = Script("val_loss", values)
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    x, y = _data()
    model = _model(lr=0.05)
    history = model.fit(x, y, epochs=len(values), verbose=0, callbacks=[script, stopper],
                        shuffle=False)
    # Best at epoch 1; epochs 2, 3, 4 do not improve -> stop after epoch 4.
    assert history.history["val_loss"] == values[:5]
    assert stopper.stopped_epoch == 4
    assert same_weights(model.get_weights(), script.weights[1])
    assert not same_weights(model.get_weights(), script.weights[4])


def test_early_stopping_without_restore_keeps_last_weights():
    script = Script("val_loss", [1.0, 2.0, 3.0])
    stopper = callbacks.EarlyStopping(patience=1)
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=3, verbose=0, callbacks=[script, stopper])
    assert stopper.stopped_epoch == 1
    assert same_weights(model.get_weights(), script.weights[1])


def test_early_stopping_max_mode_and_min_delta():
    # "accuracy" is maximised in auto mode; a rise smaller than min_delta is no improvement.
    script = Script("val_accuracy", [0.5, 0.52, 0.53, 0.9])
    stopper = callbacks.EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.05)
    x, y = _data()
    history = _model().fit(x, y, epochs=4, verbose=0, callbacks=[script, stopper])
    assert len(history.history["loss"]) == 3
    assert stopper.best == 0.5


def test_early_stopping_missing_metric_warns_and_continues(caplog):
    stopper = callbacks.EarlyStopping(monitor="val_auc", patience=0)
    x, y = _data()
    with caplog.at_level("WARNING"):
        history = _model().fit(x, y, epochs=3, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 3
    assert "val_auc" in caplog.text


def test_early_stopping_bad_mode():
    with pytest.raises(ValueError, match="mode in \\('auto', 'min', 'max'\\), received mode='up'"):
        callbacks.EarlyStopping(mode="up")


# ---- ModelCheckpoint -------------------------------------------------------------------------
def test_model_checkpoint_every_epoch_with_epoch_formatting(tmp_path):
    x, y = _data()
    model = _model()
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.sparkdl"))
    recorder = Script()
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, validation_split=0.25,
              callbacks=[ckpt, recorder])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.sparkdl", "ckpt-02.sparkdl", "ckpt-03.sparkdl"]
    second = load_model(tmp_path / "ckpt-02.sparkdl")
    assert same_weights(second.get_weights(), recorder.weights[1])
    assert not same_weights(second.get_weights(), recorder.weights[2])


def test_model_checkpoint_save_best_only_and_log_formatting(tmp_path):
    script = Script("val_loss", [3.0, 2.0, 2.5, 1.0, 1.5])
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "best-{epoch:02d}-{val_loss:.1f}"),
                                     monitor="val_loss", save_best_only=True)
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=5, verbose=0, callbacks=[script, ckpt])
    assert sorted(os.listdir(tmp_path)) == ["best-01-3.0", "best-02-2.0", "best-04-1.0"]
    best = load_model(tmp_path / "best-04-1.0")
    assert same_weights(best.get_weights(), script.weights[3])


def test_model_checkpoint_weights_only(tmp_path):
    x, y = _data()
    model = _model()
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), save_weights_only=True)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    assert sorted(os.listdir(tmp_path)) == ["w1.npz", "w2.npz"]
    other = _model()
    other.load_weights(tmp_path / "w2.npz")
    assert same_weights(other.get_weights(), model.get_weights())


# ---- LearningRateScheduler -------------------------------------------------------------------
class LrSeen(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_batch_begin(self, batch, logs=None):
        self.seen.append(self.model.optimizer.learning_rate)


def test_learning_rate_scheduler_sets_rate_each_epoch_and_logs_it():
    calls = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return 0.1 * 0.5 ** epoch

    x, y = _data(n=16)
    model = _model(lr=0.01)
    seen = LrSeen()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                        callbacks=[callbacks.LearningRateScheduler(schedule), seen])
    assert calls == [(0, 0.01), (1, 0.1), (2, 0.05)]
    assert seen.seen == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert model.optimizer.learning_rate == 0.025
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]


def test_learning_rate_scheduler_rates_are_used_by_the_optimizer():
    # Full-batch SGD without shuffling: fit equals train_on_batch with the rate set by hand.
    x, y = _data(n=16)
    model = _model(lr=0.01)
    reference = _model(lr=0.01)
    reference.set_weights(model.get_weights())
    rates = [0.2, 0.05, 0.01]
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
              callbacks=[callbacks.LearningRateScheduler(lambda e, lr: rates[e])])
    for rate in rates:
        reference.optimizer.learning_rate = rate
        reference.train_on_batch(x, y)
    assert same_weights(model.get_weights(), reference.get_weights())


def test_learning_rate_scheduler_rejects_bad_schedules():
    with pytest.raises(TypeError, match="expected a callable schedule"):
        callbacks.LearningRateScheduler(0.1)
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match="finite float, received nan at epoch 0"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[callbacks.LearningRateScheduler(lambda e, lr: float("nan"))])


def test_non_callback_is_type_error():
    x, y = _data()
    model = _model()
    before = model.get_weights()
    with pytest.raises(TypeError, match="expected callbacks to be Callback instances, received str"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=["early_stopping"])
    with pytest.raises(TypeError, match="received function"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lambda *a: None])
    assert same_weights(model.get_weights(), before)


def test_hooks_called_in_order_with_params():
    events = []

    class Spy(callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append(("train_begin", self.params["epochs"], self.params["steps"]))

        def on_epoch_begin(self, epoch, logs=None):
            events.append(("epoch_begin", epoch))

        def on_batch_end(self, batch, logs=None):
            events.append(("batch_end", batch, isinstance(logs["loss"], float)))

        def on_epoch_end(self, epoch, logs=None):
            events.append(("epoch_end", epoch, sorted(logs)))

        def on_train_end(self, logs=None):
            events.append(("train_end",))

    x, y = _data(n=10)
    _model().fit(x, y, epochs=2, batch_size=6, verbose=0, callbacks=[Spy()])
    epoch_events = [("epoch_begin", 0), ("batch_end", 0, True), ("batch_end", 1, True),
                    ("epoch_end", 0, ["loss", "mse"]), ("epoch_begin", 1), ("batch_end", 0, True),
                    ("batch_end", 1, True), ("epoch_end", 1, ["loss", "mse"])]
    assert events == [("train_begin", 2, 2)] + epoch_events + [("train_end",)]


# ---- progress output -------------------------------------------------------------------------
def test_verbose_1_writes_progress_bar_to_stderr(capsys):
    x, y = _data()
    _model().fit(x, y, epochs=2, batch_size=10, verbose=1)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Epoch 1/2" in captured.err and "Epoch 2/2" in captured.err
    assert "4/4 [" in captured.err and "=" in captured.err
    assert "loss: " in captured.err and "mse: " in captured.err


def test_verbose_2_writes_one_line_per_epoch(capsys):
    x, y = _data()
    _model().fit(x, y, epochs=3, batch_size=10, verbose=2)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 3
    assert all(line.startswith(f"Epoch {i + 1}/3") and "loss: " in line for i, line in enumerate(lines))


def test_verbose_0_writes_nothing(capsys):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_split=0.2)
    model.evaluate(x, y)
    model.predict(x)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
