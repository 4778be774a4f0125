"""Sync gradient rounds on the sharded parameter server (``ShardRounds``) without Spark: the
row-sparse round against single-process training and against the whole-vector round, and
what a round refuses before anything changes."""
import copy
import threading

import numpy as np
import pytest

from sparkdl.distributed.protocol import Connection, Op, RemoteError
from sparkdl.distributed.sparse import ParamMap, RowSlice
from sparkdl.distributed.sparse_worker import compact_model, run_sparse_sync_round
from sparkdl.distributed.worker import RoundSpec, model_vector, round_samples, run_round
from sparkdl.engine import optimizers
from tests.distributed.sparse_cases import assembled, click_block, click_model, same, sharded_rounds


def sharded_sync(model, blocks, specs, k, optimizer, compact=False):
    """The shards' vector after the rounds of ``specs``, partition p training ``blocks[p]``."""
    m = ParamMap.from_model(model)
    steps = 1 if specs[0].frequency == "batch" else int(specs[0].frequency)
    capacity = m.capacity(steps, specs[0].batch_size)
    assert not compact or capacity < [t.rows for t in m.tables]       # a compact worker is smaller
    workers = [compact_model(model, capacity) if compact else copy.deepcopy(model) for _ in blocks]
    for w in workers:
        w.flat_weights[m.dense_size:] = np.nan           # rows a round does not pull are never read
    with sharded_rounds(model, k, optimizer) as (layout, shards, connect):
        clients = [connect(p) for p in range(len(blocks))]
        for spec in specs:
            for s in shards:
                s.open_round(spec.round, {p: round_samples(spec, len(y)) for p, (_, y) in enumerate(blocks)})
            for p, ((xs, y), w) in enumerate(zip(blocks, workers)):
                result = run_sparse_sync_round(w, xs, y, spec, p, clients[p], m)
                assert not result.diverged and result.samples == round_samples(spec, len(y))
            for s in shards:
                s.close_round()
        return assembled(layout, shards)


def rounds(n, frequency="batch", batch_size=32):
    return [RoundSpec(round=r, seed=3, batch_size=batch_size, frequency=frequency, aggregate="gradients")
            for r in range(n)]


@pytest.mark.parametrize("compact", [False, True])
def test_one_partition_steps_as_single_process_training_with_any_optimizer(compact):
    """Batches of 4 (sums and means exact), Adam, BatchNorm statistics: a pass of rounds of
    one step is a pass of ``train_epoch``, whose steps touch only the batch's rows too."""
    model = click_model(optimizers.Adam(0.01), batchnorm=True)
    xs, y = click_block(model, n=128)
    expected = copy.deepcopy(model)
    expected.train_epoch(xs, y, 4, (3, 0, 0))
    got = sharded_sync(model, [(xs, y)], rounds(32, batch_size=4), 3, optimizers.Adam(0.01), compact)
    assert not same(got, model_vector(model))
    assert same(got, model_vector(expected))


def test_two_partitions_with_plain_sgd_step_as_the_whole_vector_round():
    model = click_model(batchnorm=True)
    xs, y = click_block(model, n=200)
    blocks = [([a[:120] for a in xs], y[:120]), ([a[120:] for a in xs], y[120:])]
    specs = rounds(3, frequency=2, batch_size=16)
    weights, state, opt = model.get_flat_weights(), model.flat_state.copy(), optimizers.SGD(0.1)
    for spec in specs:                     # the hub's round: float64 sums in partition order
        results = [run_round(copy.deepcopy(model), bx, by, spec, p, weights, state, {}, 0)
                   for p, (bx, by) in enumerate(blocks)]
        total = sum(r.samples for r in results)
        grads = np.zeros(weights.size, np.float64)
        stats = np.zeros(state.size, np.float64)
        for r in results:
            grads += r.vector
            stats += np.multiply(r.state, float(r.samples), dtype=np.float64)
        opt.apply(weights, np.divide(grads, total).astype(np.float32))
        state = np.divide(stats, total).astype(np.float32)
    got = sharded_sync(model, blocks, specs, 2, optimizers.SGD(0.1))
    assert same(got, np.concatenate([weights, state]))


def test_a_round_refuses_what_it_does_not_expect_and_closes_only_when_complete():
    model = click_model()
    m = ParamMap.from_model(model)
    ids = [np.array([1, 2]), np.array([1, 2])]
    update = RowSlice(np.ones(m.dense_length, np.float32), ids, [np.ones((2, t.dim), np.float32) for t in m.tables])
    with sharded_rounds(model, 2, optimizers.SGD(0.1)) as (layout, shards, connect):
        before = assembled(layout, shards)
        with pytest.raises(RemoteError, match="round 0 is not open"):
            connect(0).pull_round(0, ids)
        for s in shards:
            s.open_round(0, {0: 4, 1: 4})
        a, b = connect(0), connect(1)
        with pytest.raises(RemoteError, match="expected samples=4 from partition 0"):
            a.push_round(0, 3, update)
        assert a.push_round(0, 4, update)
        assert not connect(0).push_round(0, 4, update)          # a replay is dropped
        with pytest.raises(RemoteError, match="round 1 is not open"):
            b.push_round(1, 4, update)
        with Connection(connect.addresses[0], connect.token, 5.0) as conn:
            with pytest.raises(RemoteError, match="expects no partition 5"):
                conn.request(Op.PULL, {"round": 0, "partition": 5, "counts": [0, 0]},
                             np.zeros(0, m.id_dtype))
        with pytest.raises(RuntimeError, match=r"without the pushes of partitions \[1\]"):
            shards[0].close_round()
        assert same(assembled(layout, shards), before)
        assert b.push_round(0, 4, update)
        assert [s.close_round() for s in shards] == [{0: 4, 1: 4}] * 2
        assert not same(assembled(layout, shards), before)


def test_a_pull_waits_for_its_round_to_open_and_a_discarded_round_applies_nothing():
    """With ``wait`` a pull of a round the host has not opened yet is answered once it opens
    (a one-job fit's host opens round r while the other tasks already ask for it); a round
    discarded (a retried stage's, before the shard takes the driver's values) is not applied."""
    model = click_model()
    m = ParamMap.from_model(model)
    ids = [np.array([1, 2]), np.array([1, 2])]
    update = RowSlice(np.ones(m.dense_length, np.float32), ids, [np.ones((2, t.dim), np.float32) for t in m.tables])
    with sharded_rounds(model, 2, optimizers.SGD(0.1), wait=60.0) as (layout, shards, connect):
        before = assembled(layout, shards)
        pulled = []
        puller = threading.Thread(target=lambda: pulled.append(connect(0).pull_round(1, ids)))
        puller.start()
        for s in shards:                 # round 0 opens and ends: the pull of round 1 still waits
            s.open_round(0, {1: 4})
            s.discard_round()
        assert puller.is_alive() and not pulled
        for s in shards:
            s.open_round(1, {0: 4})
        puller.join(30)
        assert not puller.is_alive() and len(pulled) == 1
        np.testing.assert_array_equal(pulled[0].dense[:m.dense_size], before[:m.dense_size])
        assert connect(0).push_round(1, 4, update)
        for s in shards:
            s.discard_round()
            assert s.open is None and s.close_round() == {}
        assert same(assembled(layout, shards), before)
        with pytest.raises(RemoteError, match="round 1 is not open"):
            connect(0, attempt=1).push_round(1, 4, update)
