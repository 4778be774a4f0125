"""What one partition does in a round, without Spark (``sparkdl.distributed.worker``): how
results combine (weighted by samples), how a round's steps map onto the partition's passes,
and where its randomness comes from: ``(seed, round or epoch, partition)``, so partitions draw
different batches and dropout masks while a retried task draws the same ones again.

Expected values are written out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl.distributed import worker
from sparkdl.distributed.worker import RoundResult, RoundSpec
from tests.helpers import indexed_rows, mlp, probed_model

f32 = np.float32


def result(samples, vector, state=None, slots=None, **kwargs):
    return RoundResult(samples=samples, vector=np.array(vector, f32),
                       state=None if state is None else np.array(state, f32),
                       slots={k: np.array(v, f32) for k, v in (slots or {}).items()},
                       partitions=1, **kwargs)


# ---- combine ----------------------------------------------------------------------------------
def test_combine_averages_weights_state_and_slots_by_samples():
    a = result(1, [1.0, 2.0], state=[10.0], slots={"m": [4.0, 8.0]}, steps=1, loss_sum=1.5,
               metric_states=[np.array([1.0, 2.0])], compute_seconds=0.5, short_partitions=[(0, 1)])
    b = result(3, [5.0, -2.0], state=[2.0], slots={"m": [0.0, 4.0]}, steps=3, loss_sum=2.25,
               metric_states=[np.array([3.0, 4.0])], compute_seconds=0.25)
    c = worker.combine(a, b, "weights")
    # (1 * a + 3 * b) / 4, entry by entry
    np.testing.assert_array_equal(c.vector, [4.0, -1.0])
    np.testing.assert_array_equal(c.state, [4.0])
    np.testing.assert_array_equal(c.slots["m"], [1.0, 5.0])
    assert (c.samples, c.steps, c.loss_sum, c.partitions) == (4, 3, 3.75, 2)
    np.testing.assert_array_equal(c.metric_states[0], [4.0, 6.0])
    assert c.compute_seconds == 0.5 and c.short_partitions == [(0, 1)]


def test_combine_sums_gradients_and_averages_state_by_samples():
    a = result(2, [1.0, 2.0], state=[1.0])
    b = result(6, [5.0, -2.0], state=[5.0])
    c = worker.combine(a, b, "gradients")
    np.testing.assert_array_equal(c.vector, [6.0, 0.0])        # sums already, not averaged
    np.testing.assert_array_equal(c.state, [4.0])              # (2 * 1 + 6 * 5) / 8
    assert c.samples == 8


def test_combine_of_very_unequal_partitions_in_any_order_is_the_weighted_mean():
    parts = [result(1, [8.0]), result(9, [0.0]), result(30, [2.0])]
    expected = (1 * 8.0 + 9 * 0.0 + 30 * 2.0) / 40                # 1.7; the plain mean would be 3.33
    for order in [(0, 1, 2), (2, 1, 0), (1, 2, 0)]:
        first, second, third = (parts[i] for i in order)
        c = worker.combine(worker.combine(first, second, "weights"), third, "weights")
        np.testing.assert_allclose(c.vector, [expected], rtol=1e-6)
        assert c.samples == 40 and c.partitions == 3
    nested = worker.combine(parts[0], worker.combine(parts[1], parts[2], "weights"), "weights")
    np.testing.assert_allclose(nested.vector, [expected], rtol=1e-6)


def test_an_empty_partition_changes_nothing_but_is_reported():
    def full():
        return result(5, [1.0, -1.0], state=[3.0])

    def empty():
        return RoundResult(partitions=1, empty_partitions=[4])
    for c in (worker.combine(empty(), full(), "weights"), worker.combine(full(), empty(), "weights")):
        np.testing.assert_array_equal(c.vector, [1.0, -1.0])
        np.testing.assert_array_equal(c.state, [3.0])
        assert c.samples == 5 and c.partitions == 2 and c.empty_partitions == [4]


def test_a_diverged_partition_poisons_the_round_and_is_named():
    bad = RoundResult(samples=4, steps=1, loss_sum=float("nan"), partitions=1,
                      diverged=[(1, "the loss became nan")])
    c = worker.combine(result(6, [1.0]), bad, "weights")
    assert c.diverged == [(1, "the loss became nan")]
    assert c.vector is None and c.samples == 10 and c.partitions == 2


# ---- a round's steps and passes -----------------------------------------------------------------
@pytest.mark.parametrize("frequency, rows, batch_size, expected", [
    ("epoch", 10, 4, 3), ("epoch", 8, 4, 2), ("epoch", 3, 4, 1), ("batch", 10, 4, 1), (5, 10, 4, 5)])
def test_steps_in_round(frequency, rows, batch_size, expected):
    assert worker.steps_in_round(frequency, rows, batch_size) == expected


def spec(frequency, round_index, seed=7, batch_size=4, aggregate="weights"):
    return RoundSpec(round=round_index, seed=seed, batch_size=batch_size, frequency=frequency,
                     aggregate=aggregate)


@pytest.mark.parametrize("frequency, round_index, steps, per_epoch, expected", [
    # one pass per round: the round is the pass
    ("epoch", 4, 5, 5, [((7, 4, 1), 0, 5)]),
    # tau = 3 over passes of 4 batches: round 2 is steps 6, 7, 8 = batches 2-3 of pass 1, 0 of pass 2
    (3, 2, 3, 4, [((7, 1, 1), 2, 4), ((7, 2, 1), 0, 1)]),
    # tau = 5 over passes of 2: round 1 is steps 5-9 = batch 1 of pass 2, passes 3 and 4
    (5, 1, 5, 2, [((7, 2, 1), 1, 2), ((7, 3, 1), 0, 2), ((7, 4, 1), 0, 2)]),
    # one step per round: round 6 is batch 2 of pass 1 (passes of 4)
    ("batch", 6, 1, 4, [((7, 1, 1), 2, 3)]),
])
def test_pass_slices_of_a_round(frequency, round_index, steps, per_epoch, expected):
    assert worker._pass_slices(spec(frequency, round_index), 1, steps, per_epoch) == expected


@pytest.mark.parametrize("start, stop, expected", [(0, 3, 10), (1, 3, 6), (2, 3, 2), (0, 1, 4), (1, 2, 4)])
def test_rows_in_batches_of_a_pass(start, stop, expected):
    assert worker._rows(10, 4, start, stop) == expected


def test_a_round_trains_the_rows_of_its_batches_and_counts_them():
    x, y = indexed_rows(10)
    model, probe = probed_model()
    r = worker.run_round(model, [x], y, spec(3, 1), 0, model.get_flat_weights(), None, {}, 0)
    # Steps 3, 4, 5 over passes of 3 batches (4, 4, 2 rows): pass 1 in full, 10 rows.
    assert (r.samples, r.steps, r.partitions) == (10, 3, 1)
    assert sorted(row for rows, _ in probe.seen for row in rows) == list(range(10))


# ---- seed keys: partitions differ, retries repeat -----------------------------------------------
class LocalServer:
    """The parameter server's client protocol in-process: pushes add into one vector."""

    def __init__(self, vector):
        self.vector = vector.copy()

    def start(self):
        pass

    def pull(self, clock):
        return self.vector.copy()

    def push(self, sequence, samples, update):
        self.vector += update
        return True

    def done(self):
        pass


def run_partition(partition, frequency, start, mode="sync", build=probed_model, rows=20):
    """The Probe's record (or the weights) of one partition's round 1 on the same 20 rows."""
    x, y = indexed_rows(rows)
    model, probe = build()
    s = spec(frequency, 1)
    if mode == "sync":
        r = worker.run_round(model, [x], y, s, partition, start, None, {}, 0)
        vector = r.vector
    else:
        server = LocalServer(start)
        worker.run_async_epoch(model, [x], y, s, partition, server)
        vector = server.vector
    return (probe.seen if probe is not None else None), vector


@pytest.mark.parametrize("mode, frequency", [("sync", "epoch"), ("sync", 3), ("sync", "batch"),
                                             ("async", "batch"), ("async", 2)])
def test_partitions_draw_different_batches_and_streams_and_a_retry_the_same(mode, frequency):
    start = probed_model()[0].get_flat_weights()
    first, w_first = run_partition(0, frequency, start, mode)
    other, w_other = run_partition(1, frequency, start, mode)
    retry, w_retry = run_partition(0, frequency, start, mode)
    assert retry == first                                   # a retried task: the same batches and draws
    np.testing.assert_array_equal(w_retry, w_first)
    assert [rows for rows, _ in other] != [rows for rows, _ in first], "same batch order in two partitions"
    assert not {d for _, d in other} & {d for _, d in first}, "same random stream in two partitions"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_partitions_draw_different_dropout_masks_and_a_retry_the_same(mode):
    """One full batch per partition, so only the masks (not the batch order: a permutation of
    a full batch changes nothing but rounding) can tell the partitions' results apart."""
    def build():
        return mlp(input_dim=2, hidden=(16,), activations=("tanh",), dropout=0.5, sgd=0.5), None
    start = build()[0].get_flat_weights()
    _, first = run_partition(0, "epoch", start, mode, build, rows=4)
    _, other = run_partition(1, "epoch", start, mode, build, rows=4)
    _, retry = run_partition(0, "epoch", start, mode, build, rows=4)
    np.testing.assert_array_equal(retry, first)
    assert np.abs(other - first).max() > 1e-3


def test_combine_with_an_empty_partition_leaves_both_arguments_alone():
    """Merging an empty partition's result returns a new result: reusing an argument later
    (a tree reduce may) must not count the empty partition twice."""
    full = worker.RoundResult(samples=4, steps=1, loss_sum=2.0, vector=np.ones(3, np.float32),
                              partitions=1)
    empty = worker.RoundResult(partitions=1, empty_partitions=[5])
    for merged in (worker.combine(empty, full, "weights"), worker.combine(full, empty, "weights")):
        assert merged is not full and merged.partitions == 2 and merged.empty_partitions == [5]
    assert full.partitions == 1 and full.empty_partitions == []
    assert empty.partitions == 1 and empty.empty_partitions == [5]


# ---- the driver's optimizer config: decay reaches the workers with the iterations ----------------
def test_a_worker_steps_with_the_driver_s_decay_at_the_driver_s_iterations():
    """w = 1 on one example x = 1, y = 0 under mse: the gradient is 2w. The worker's own
    optimizer has no decay; the driver's config brings decay = 0.5, and the round's iterations
    (4) make the step's rate 0.1 / (1 + 0.5 * 4) = 1/30."""
    from sparkdl import layers, optimizers
    from sparkdl.models import Sequential
    model = Sequential([layers.Dense(1, use_bias=False, input_shape=(1,))])
    model.compile(optimizers.SGD(0.1), "mse")
    driver = optimizers.SGD(0.1, decay=0.5)
    s = RoundSpec(round=0, seed=0, batch_size=1, frequency="batch", aggregate="weights",
                  optimizer=driver.get_config())
    x, y = np.ones((1, 1), f32), np.zeros((1, 1), f32)
    r = worker.run_round(model, [x], y, s, 0, np.ones(1, f32), None, {}, 4)
    np.testing.assert_allclose(r.vector, [1 - 2 / 30], rtol=1e-6)
    assert model.optimizer.decay == 0.5 and model.optimizer.iterations == 5
    r = worker.run_round(model, [x], y, s, 0, np.ones(1, f32), None, {}, 0)
    np.testing.assert_allclose(r.vector, [1 - 2 * 0.1], rtol=1e-6)


def test_a_worker_state_without_slots_in_gradients_mode():
    """In gradients mode the server steps the optimizer: the worker's slots never change and
    its state (what the driver keeps per partition and a report carries) leaves them out."""
    from sparkdl.engine import optimizers
    model = mlp()
    model.compile(optimizer=optimizers.Adagrad(0.1), loss="mse")
    model.optimizer.build(model.flat_weights.size)
    meta, vector = worker.worker_state(model)
    assert meta["slots"] == ["accumulator"] and vector.size == model.flat_weights.size
    residual = np.arange(3, dtype=f32)
    meta, vector = worker.worker_state(model, residual=residual, with_slots=False)
    assert meta["slots"] == [] and meta["residual"] == 3
    np.testing.assert_array_equal(vector, residual)
    model.optimizer.slots["accumulator"][:] = 5.0
    np.testing.assert_array_equal(worker.set_worker_state(model, meta, vector), residual)
    assert not model.optimizer.slots
