"""``mode="sync", aggregate="gradients", num_servers=K`` on local[2]: a small Wide & Deep's
sync gradient rounds applied by K shards hosted by the fit's tasks, against the same rounds
applied by the driver on the whole vector (``num_servers=0``), same data and seeds."""
import numpy as np
import pytest

from sparkdl.data.synthetic import click_data
from sparkdl.distributed.sparse import ParamMap
from sparkdl.engine import optimizers
from sparkdl.engine.callbacks import Callback
from sparkdl.spark import SparkModel
from tests.spark.test_sharded import NUM_IDS, click_model, roc_auc

ROUNDS_PER_EPOCH = 5        # 1,200 rows in two partitions at batch 32: 19 steps, a round every 4


@pytest.fixture(scope="module")
def clicks(spark):
    data = click_data(2200, seed=0, num_ids=NUM_IDS)       # 1,200 rows to train on, 1,000 to test
    pairs = [((i, d), float(y)) for i, d, y in zip(data.ids[:1200], data.dense[:1200], data.label[:1200])]
    return {"rdd": lambda parts: spark.sparkContext.parallelize(pairs, parts),
            "x_test": [data.ids[1200:], data.dense[1200:]], "y_test": data.label[1200:]}


def fit(clicks, num_servers, epochs=2, optimizer=None, callbacks=None, frequency=4):
    model = click_model()
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="binary_crossentropy")
    spark_model = SparkModel(model, mode="sync", aggregate="gradients", frequency=frequency, num_workers=2,
                             num_servers=num_servers)
    history = spark_model.fit(clicks["rdd"](2), epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
    auc = roc_auc(clicks["y_test"], model.predict(clicks["x_test"]).reshape(-1))
    return model, history, auc


@pytest.fixture(scope="module")
def whole_vector(clicks):
    return fit(clicks, 0)


@pytest.mark.parametrize("k", [1, 2])
def test_shards_step_the_rounds_exactly_as_the_driver_does_with_plain_sgd(clicks, whole_vector, k):
    """Plain SGD (no momentum) has no slots: a row no partition touched in a round has a zero
    mean gradient, which the driver's dense step leaves unchanged (w - lr * 0 = w) and a shard
    does not step at all; every other element gets the same float32 step from the same mean
    (float64 sums of the same float32 gradient sums in partition order, rounded once). So the
    shards end with the driver's weights bit for bit, whatever K."""
    whole, whole_history, _ = whole_vector
    model, history, _ = fit(clicks, k)
    assert history.settings["num_servers"] == k
    assert not np.array_equal(model.flat_weights, click_model().flat_weights)
    np.testing.assert_array_equal(model.flat_weights, whole.flat_weights)
    np.testing.assert_array_equal(model.flat_state, whole.flat_state)
    assert len(history.rounds) == len(whole_history.rounds) == 2 * ROUNDS_PER_EPOCH
    assert history.history["loss"] == whole_history.history["loss"]
    # A round moves the dense part and the rows its batches touch, not the tables.
    vector = 4 * (model.flat_weights.size + model.flat_state.size)
    assert all(0 < r["bytes"] < 2 * vector for r in history.rounds), [r["bytes"] for r in history.rounds]


def test_with_adam_the_shards_learn_as_the_driver_does(clicks):
    """Adam's slots: a shard moves only the rows pushed (lazy, as single-process training's
    row-sparse steps), the driver every row, so the weights differ; both learn alike."""
    _, whole, whole_auc = fit(clicks, 0, epochs=3, optimizer=optimizers.Adam(0.03), frequency="batch")
    model, history, auc = fit(clicks, 2, epochs=3, optimizer=optimizers.Adam(0.03), frequency="batch")
    assert auc > 0.7 and abs(auc - whole_auc) < 0.03, (auc, whole_auc)
    loss, whole_loss = history.history["loss"], whole.history["loss"]
    # The driver's dense Adam also moves rows a round did not touch (their moments decay), which fits
    # the training rows a little faster; the held-out AUC above is what both must reach.
    assert loss[-1] < 0.7 * loss[0] and abs(loss[-1] - whole_loss[-1]) < 0.25 * whole_loss[-1], (loss, whole_loss)


def test_callbacks_that_watch_rounds_and_validation_see_the_shards_values(clicks):
    """A callback with ``on_batch_end`` makes the driver take the shards' values after every
    round; validation (rows the tasks hold out) sees them at the epoch's end."""
    seen = []

    class Weights(Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(self.model.flat_weights.copy())

    model = click_model()
    start = model.flat_weights.copy()
    history = SparkModel(model, mode="sync", aggregate="gradients", frequency=4, num_workers=2, num_servers=2).fit(
        clicks["rdd"](2), epochs=2, batch_size=32, verbose=0, validation_split=0.2, callbacks=[Weights()])
    rounds = len(history.rounds)
    assert rounds == 2 * 4 and len(seen) == rounds       # 480 rows per partition: 15 steps, tau 4
    assert all(not np.array_equal(a, b) for a, b in zip([start] + seen, seen))
    np.testing.assert_array_equal(seen[-1], model.flat_weights)
    val_loss = history.history["val_loss"]
    assert len(val_loss) == 2 and np.all(np.isfinite(val_loss)) and val_loss[-1] < val_loss[0], val_loss


@pytest.mark.parametrize("settings, message", [
    ({"mode": "sync"}, r"num_servers=1 shards the parameter server of modes async, hogwild, ssp, and the "
                       r"rounds of mode 'sync' with aggregate='gradients'; received mode='sync' with "
                       r"aggregate='weights': use aggregate='gradients', or num_servers=0"),
    ({"mode": "easgd", "rho": 1.0}, r"num_servers=1 shards the parameter server of modes async, hogwild, ssp, "
                                    r"and the rounds of mode 'sync' with aggregate='gradients'; received "
                                    r"mode='easgd': use one of those, or num_servers=0"),
    ({"mode": "adag"}, r"received mode='adag': use one of those"),
    ({"mode": "sync", "aggregate": "gradients", "overlap": True}, r"num_servers=1 in mode 'sync' pushes each "
                                                                  r"round's row-sparse gradient sum .*received "
                                                                  r"overlap=True"),
    ({"mode": "sync", "aggregate": "gradients", "transport": "allreduce"},
     r"num_servers=1 runs the shards inside the fit's one barrier job; received transport='allreduce'"),
    ({"mode": "sync", "aggregate": "gradients", "execution": "rounds"},
     r"num_servers=1 runs the shards inside the fit's one barrier job; received transport='socket', "
     r"execution='rounds'"),
])
def test_sync_settings_that_cannot_shard_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SparkModel(click_model(), **{"num_servers": 1, **settings})


def test_a_step_that_makes_the_shards_values_non_finite_stops_the_fit_keeping_the_drivers_model(clicks):
    """One round per epoch and a learning rate whose step overflows float32: the hosts report
    it instead of pushing their values, and the driver's model keeps those it had."""
    model = click_model()
    model.compile(optimizer=optimizers.SGD(3e38), loss="binary_crossentropy")
    model.flat_weights[:ParamMap.from_model(model).dense_size] *= 30     # gradients above 1: the step overflows
    start = model.get_flat_weights()
    spark_model = SparkModel(model, mode="sync", aggregate="gradients", frequency="epoch", num_workers=2,
                             num_servers=2)
    with pytest.raises(FloatingPointError, match=r"round 1 \(partition 0: shard 0 holds non-finite values "
                                                 r"after the optimizer's step .*after round 0"):
        spark_model.fit(clicks["rdd"](2), epochs=2, batch_size=32, verbose=0)
    np.testing.assert_array_equal(model.flat_weights, start)


@pytest.mark.parametrize("adam", [False, True], ids=["sgd", "adam"])
def test_a_fit_resumed_from_a_checkpoint_ends_as_an_uninterrupted_one(clicks, tmp_path, adam):
    """Checkpoints every 3 rounds (round 3 falls inside epoch 1: the driver's model takes the
    shards' values there too, and training goes on unchanged); a fit resumed from the newest,
    after epoch 1, on new shards ends with the weights of an uninterrupted fit. With Adam the
    shards' slots come back to the driver's optimizer with their values, so the checkpoint
    holds them and the new shards start from them."""
    def model_of():
        model = click_model()
        if adam:
            model.compile(optimizer=optimizers.Adam(0.01), loss="binary_crossentropy")
        return model

    def sharded(model, epochs, **options):
        return SparkModel(model, mode="sync", aggregate="gradients", frequency=4, num_workers=2,
                          num_servers=2).fit(clicks["rdd"](2), epochs=epochs, batch_size=32, verbose=0,
                                             checkpoint_every=3, **options)

    uninterrupted = model_of()
    sharded(uninterrupted, 2)
    sharded(model_of(), 1, checkpoint_dir=str(tmp_path))
    resumed = model_of()
    history = sharded(resumed, 2, checkpoint_dir=str(tmp_path), resume=True)
    assert history.resumed_from == ROUNDS_PER_EPOCH
    np.testing.assert_array_equal(resumed.flat_weights, uninterrupted.flat_weights)
    if adam:
        assert resumed.optimizer.iterations == uninterrupted.optimizer.iterations == 2 * ROUNDS_PER_EPOCH
        for name in ("m", "v"):
            assert np.count_nonzero(uninterrupted.optimizer.slots[name])
            np.testing.assert_array_equal(resumed.optimizer.slots[name], uninterrupted.optimizer.slots[name])
