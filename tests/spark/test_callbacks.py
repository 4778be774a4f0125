"""The engine's callbacks under SparkModel.fit: EarlyStopping, ModelCheckpoint and
LearningRateScheduler run on the driver between rounds and see (and set) what the engine's fit
would. Expected values come from the single-process engine on the same NumPy arrays."""
import numpy as np
import pytest

from sparkdl import callbacks
from sparkdl.models import load_model
from sparkdl.spark import SparkModel
from tests.helpers import assert_same_weights, digits_mlp, one_hot, vector_frame


class Recorder(callbacks.Callback):
    """Copies of the driver's weights and learning rate at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.weights, self.rates = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_flat_weights().copy())
        self.rates.append(self.model.optimizer.learning_rate)


# ---- callbacks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_early_stopping_stops_when_nothing_improves(spark, data, monitor):
    x, y = data["x"][:200], one_hot(data["y"][:200], 10)
    df = vector_frame(spark, x, y, partitions=2)
    model = digits_mlp(lr=0.0, momentum=0.0)   # the weights never move
    start = model.get_flat_weights().copy()
    stopper = callbacks.EarlyStopping(monitor=monitor, patience=2, min_delta=1e-4)
    val = vector_frame(spark, data["x_test"][:50], one_hot(data["y_test"][:50], 10), partitions=2)
    spark_model = SparkModel(model, num_workers=2)
    history = spark_model.fit(df, epochs=10, batch_size=32, verbose=0, callbacks=[stopper],
                              validation_data=val if monitor == "val_loss" else None)
    # Epoch 1 sets the best value; epochs 2 and 3 do not improve on it: patience 2 runs out.
    assert len(history.history["loss"]) == 3 and history.epoch == [0, 1, 2]
    assert len(history.rounds) == 3
    assert stopper.stopped_epoch == 2
    assert (monitor == "val_loss") == ("val_loss" in history.history)
    np.testing.assert_array_equal(model.get_flat_weights(), start)
    if monitor == "val_loss":
        expected = model.evaluate(data["x_test"][:50], one_hot(data["y_test"][:50], 10))["loss"]
        np.testing.assert_allclose(history.history["val_loss"], [expected] * 3, rtol=1e-6)


def test_early_stopping_does_not_stop_while_the_loss_improves(spark, data):
    df = vector_frame(spark, data["x"][:300], one_hot(data["y"][:300], 10), partitions=2)
    stopper = callbacks.EarlyStopping(monitor="loss", patience=1)
    history = SparkModel(digits_mlp(lr=0.05, momentum=0.0), num_workers=2).fit(
        df, epochs=4, batch_size=32, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 4
    assert np.all(np.diff(history.history["loss"]) < 0)


def test_model_checkpoint_saves_each_epoch_and_loads_back(spark, data, tmp_path):
    df = vector_frame(spark, data["x"][:300], one_hot(data["y"][:300], 10), partitions=2)
    model = digits_mlp(seed=9)
    recorder = Recorder()
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.sparkdl"))
    SparkModel(model, num_workers=2).fit(df, epochs=3, batch_size=32, verbose=0,
                                         callbacks=[recorder, checkpoint])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ckpt-0{e}.sparkdl" for e in (1, 2, 3)]
    for epoch in range(3):
        loaded = load_model(tmp_path / f"ckpt-0{epoch + 1}.sparkdl")
        np.testing.assert_array_equal(loaded.get_flat_weights(), recorder.weights[epoch])
        assert loaded.loss.name == "categorical_crossentropy"
    assert np.abs(recorder.weights[0] - recorder.weights[2]).max() > 1e-3
    last = load_model(tmp_path / "ckpt-03.sparkdl")
    np.testing.assert_array_equal(last.get_flat_weights(), model.get_flat_weights())
    assert last.optimizer.iterations == model.optimizer.iterations > 0
    np.testing.assert_array_equal(last.predict(data["x_test"]), model.predict(data["x_test"]))


def test_model_checkpoint_save_best_only_on_val_loss(spark, data, tmp_path):
    df = vector_frame(spark, data["x"][:200], one_hot(data["y"][:200], 10), partitions=2)
    val = vector_frame(spark, data["x_test"][:50], one_hot(data["y_test"][:50], 10), partitions=2)
    model = digits_mlp(lr=0.0, momentum=0.0)   # val_loss is the same every epoch
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "best-{epoch}.sparkdl"), monitor="val_loss",
                                           save_best_only=True)
    SparkModel(model, num_workers=2).fit(df, epochs=3, batch_size=64, verbose=0,
                                         callbacks=[checkpoint], validation_data=val)
    assert [p.name for p in tmp_path.iterdir()] == ["best-1.sparkdl"]
    np.testing.assert_array_equal(load_model(tmp_path / "best-1.sparkdl").get_flat_weights(),
                                  model.get_flat_weights())


def lr_schedule(epoch, lr):
    return 0.1 if epoch == 0 else 0.0


@pytest.mark.parametrize("aggregate", ["gradients", "weights"])
def test_learning_rate_scheduler_zero_after_first_epoch_freezes_weights(spark, data, aggregate):
    df = vector_frame(spark, data["x"][:300], one_hot(data["y"][:300], 10), partitions=2)
    model = digits_mlp(seed=10, lr=0.1, momentum=0.0)   # no momentum: lr 0 means no step at all
    start = model.get_flat_weights().copy()
    recorder = Recorder()
    history = SparkModel(model, num_workers=2, aggregate=aggregate).fit(
        df, epochs=3, batch_size=32, verbose=0,
        callbacks=[callbacks.LearningRateScheduler(lr_schedule), recorder])
    assert recorder.rates == [0.1, 0.0, 0.0]
    assert history.history["learning_rate"] == [0.1, 0.0, 0.0]
    assert np.abs(recorder.weights[0] - start).max() > 1e-3
    np.testing.assert_array_equal(recorder.weights[1], recorder.weights[0])
    np.testing.assert_array_equal(recorder.weights[2], recorder.weights[0])


def test_learning_rate_scheduler_one_worker_equals_engine_fit(spark, data):
    x, y = data["x"][:300], one_hot(data["y"][:300], 10)
    df = vector_frame(spark, x, y)

    def schedule(epoch, lr):
        return [0.2, 0.05, 0.01][epoch]
    local, distributed = digits_mlp(seed=11, momentum=0.0), digits_mlp(seed=11, momentum=0.0)
    local_history = local.fit(x, y, epochs=3, batch_size=32, seed=3, verbose=0,
                              callbacks=[callbacks.LearningRateScheduler(schedule)])
    history = SparkModel(distributed, num_workers=1, seed=3).fit(
        df, epochs=3, batch_size=32, verbose=0, callbacks=[callbacks.LearningRateScheduler(schedule)])
    assert history.history["learning_rate"] == local_history.history["learning_rate"] == [0.2, 0.05, 0.01]
    assert_same_weights(distributed, local, atol=1e-5)
