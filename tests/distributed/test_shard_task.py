"""The driver's side of shards hosted by a fit's tasks (``ShardSink``) and the worker a task
trains with (``ShardTask``), without Spark."""
import os

import numpy as np
import pytest

from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused
from sparkdl.distributed.shard_task import STATS, ShardSettings, ShardSink, ShardTask, layout_of
from sparkdl.distributed.worker import RoundSpec, model_vector
from sparkdl.engine import optimizers
from tests.distributed.sparse_cases import click_model

STATS_OF = {k: 1 for k in STATS}


def sink(k=2, spill=None):
    model = click_model()
    return model, ShardSink(layout_of(model, k), model, spill)


def pushed(s, shard, values, epoch=0, stats=STATS_OF):
    """Push a shard's local vector to the sink piece by piece, as ``push_values`` does."""
    at = 0
    for j, piece in enumerate(s.pieces):
        n = s.layout.piece_length(shard, piece)
        meta = {"shard": shard, "epoch": epoch, "piece": j}
        if j == len(s.pieces) - 1:
            meta.update(stats=stats, iterations=0)
        assert s.handle(Frame(Op.PUSH, meta, values[at:at + n])).op == Op.OK
        at += n
    assert at == values.size


def pulled(s, shard):
    return np.concatenate([s.handle(Frame(Op.PULL, {"shard": shard, "piece": j})).array
                           for j in range(len(s.pieces))])


def test_a_shard_starts_from_its_part_of_the_drivers_model_at_the_running_epoch():
    model, s = sink()
    s.open_epoch(4)
    reply = s.handle(Frame(Op.PULL, {"shard": 1, "piece": 0}))
    assert reply.meta == {"epoch": 4, "iterations": 0, "values": reply.array.size}
    np.testing.assert_array_equal(pulled(s, 1), s.layout.shard_values(model_vector(model), 1))


def test_pieces_are_a_few_mb_and_cover_every_row_of_a_shard_once(monkeypatch):
    from sparkdl.distributed import shard_layout
    monkeypatch.setattr(shard_layout, "PIECE_BYTES", 256)       # many pieces for a small model
    model, s = sink(3)
    assert len(s.pieces) > 2 + len(s.layout.map.tables)
    for k in range(3):
        np.testing.assert_array_equal(pulled(s, k), s.layout.shard_values(model_vector(model), k))


def test_the_driver_writes_the_values_every_shard_pushed_into_its_model_once_all_are_in(tmp_path):
    model, s = sink(spill=str(tmp_path))
    s.open_epoch(0)
    before = model_vector(model)
    changed = before + 1.0
    pushed(s, 1, s.layout.shard_values(changed, 1))
    np.testing.assert_array_equal(model_vector(model), before)       # the model waits for every shard
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-1.f32"]
    pushed(s, 0, s.layout.shard_values(changed + 1.0, 0))
    pushed(s, 0, s.layout.shard_values(changed, 0))          # a shard that pushes again starts afresh
    assert s.take() == [STATS_OF, STATS_OF]
    np.testing.assert_array_equal(model_vector(model), changed)
    # New shards (a retried stage) start from what was taken.
    np.testing.assert_array_equal(pulled(s, 0), s.layout.shard_values(changed, 0))


def test_the_sink_removes_its_own_spill_directory():
    model, s = sink()
    s.open_epoch(0)
    pushed(s, 0, s.layout.shard_values(model_vector(model), 0))
    assert os.path.isdir(s.spill) and os.listdir(s.spill)
    s.close()
    assert not os.path.exists(s.spill)


def test_an_epoch_missing_a_shards_values_says_which():
    model, s = sink(3)
    s.open_epoch(2)
    pushed(s, 1, s.layout.shard_values(model_vector(model), 1), epoch=2)
    with pytest.raises(RuntimeError, match=r"epoch 3 ended without the values of shards 0, 2"):
        s.take()


def first(s):
    return s.layout.piece_values(s.model.flat_weights, s.model.flat_state, 0, s.pieces[0])


def with_nan(s):
    values = first(s)
    values[0] = np.nan
    return values


def last(s):
    return s.layout.piece_values(s.model.flat_weights, s.model.flat_state, 0, s.pieces[-1])


@pytest.mark.parametrize("op, meta, values, message", [
    (Op.PULL, {"shard": 2, "piece": 0}, lambda s: None, r"expected a shard in \[0, 2\), received 2"),
    (Op.PULL, {"shard": 0, "piece": 10**6}, lambda s: None, r"expected a piece in \[0, \d+\), received 1000000"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "piece": 0}, lambda s: np.zeros(10**5, np.float32),
     r"expected piece 0 of shard 0: \d+ float32 values"),
    (Op.PUSH, {"shard": 0, "epoch": 1, "piece": 0}, first, r"epoch 1 is not running \(running: 0\)"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "piece": -1}, last, r"expected a piece in"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "piece": 0}, with_nan, r"NaN"),
    (Op.CLOCK, {"shard": 0, "piece": 0}, lambda s: None, r"is not served here"),
])
def test_a_bad_request_to_the_driver_is_refused(op, meta, values, message):
    _, s = sink()
    with pytest.raises(Refused, match=message):
        s.handle(Frame(op, meta, values(s)))
    assert s.collected == {} and not os.listdir(s.spill)


def test_pieces_out_of_order_or_a_last_piece_without_statistics_are_refused():
    _, s = sink()
    j = len(s.pieces) - 1
    with pytest.raises(Refused, match=r"expected piece 0 of shard 0, received piece 1"):
        s.handle(Frame(Op.PUSH, {"shard": 0, "epoch": 0, "piece": 1},
                       s.layout.piece_values(s.model.flat_weights, s.model.flat_state, 0, s.pieces[1])))
    s._next[0] = j
    with pytest.raises(Refused, match=r"expected the statistics"):
        s.handle(Frame(Op.PUSH, {"shard": 0, "epoch": 0, "piece": j, "stats": {}}, last(s)))
    assert s.collected == {}


def test_retried_registrations_are_counted():
    _, s = sink()
    for partition, attempt in ((0, 0), (1, 0), (0, 1), (1, 1)):
        s.register(partition, attempt)
    assert s.retries == 2


@pytest.mark.parametrize("optimizer, aggregate, compact", [
    (optimizers.SGD(0.05), "weights", True), (optimizers.SGD(0.05, momentum=0.9), "weights", False),
    (optimizers.Adam(0.01), "gradients", True)])
def test_a_task_trains_a_compact_worker_where_it_pushes_what_a_whole_table_worker_pushes(optimizer, aggregate,
                                                                                        compact):
    model = click_model(optimizer)
    layout = layout_of(model, 2)
    task = ShardTask(layout, ShardSettings((0, 1), ((0, 300), (1, 300)), "async", None, 2), None, None, [], None)
    spec = RoundSpec(round=0, seed=0, batch_size=32, frequency=3, aggregate=aggregate, mode="async",
                     optimizer=model.optimizer.get_config())
    local = task._worker(model, spec, 300)
    assert (local is not model) == compact
    if compact:
        assert [t.rows for t in layout_of(local, 1).map.tables] == layout.map.capacity(3, 32)
        assert task._worker(model, spec, 300) is local         # made once


def test_a_sharded_fits_tasks_receive_the_skeleton_and_make_their_workers_from_it():
    from sparkdl.distributed.shard_task import skeleton
    model = click_model(optimizers.SGD(0.05, momentum=0.9))
    layout = layout_of(model, 2)
    bones = skeleton(model)
    assert [t.rows for t in layout_of(bones, 1).map.tables] == [1] * len(layout.map.tables)
    m = layout.map
    assert bones.flat_weights.size == m.dense_size + sum(t.dim for t in m.tables)      # no tables
    settings = ShardSettings((0, 1), ((0, 300), (1, 300)), "async", None, 2, param_map=m)
    task = ShardTask(layout, settings, None, None, [], None)
    for aggregate in ("gradients", "weights"):       # compact; with momentum slots: whole tables
        spec = RoundSpec(round=0, seed=0, batch_size=32, frequency=3, aggregate=aggregate, mode="async",
                         optimizer=model.optimizer.get_config())
        local = task._worker(bones, spec, 300)
        rows = [t.rows for t in layout_of(local, 1).map.tables]
        assert rows == (m.capacity(3, 32) if aggregate == "gradients" else [t.rows for t in m.tables])
        np.testing.assert_array_equal(local.flat_weights[:m.dense_size], model.flat_weights[:m.dense_size])
        np.testing.assert_array_equal(local.flat_state, model.flat_state)
        assert local.optimizer.get_config() == model.optimizer.get_config() and not local.optimizer.slots
    assert task.whole_model(bones) is task.whole_model(bones)          # made once


def test_shards_start_from_the_drivers_optimizer_state_and_hand_theirs_back(tmp_path):
    """Gradients mode: a piece carries the values and each slot's same elements; a shard that
    starts takes the driver's slots and steps, and what it pushes back at the epoch's end is
    written into the model and its optimizer."""
    from sparkdl.distributed import shard_task
    from sparkdl.distributed.fit_task import FitEndpoint
    from sparkdl.distributed.server import FrameServer
    model = click_model(optimizers.Adam(0.01))
    opt = model.optimizer
    rng = np.random.default_rng(0)
    layout = layout_of(model, 2)
    s = ShardSink(layout, model, str(tmp_path), optimizer=opt)        # builds the driver's slots
    for name in ("m", "v"):
        opt.slots[name][...] = rng.random(model.flat_weights.size, dtype=np.float32)
    opt.iterations = 7
    settings = ShardSettings((0, 1), ((0, 10), (1, 10)), "async", None, 1, optimizer=optimizers.Adam(0.01),
                             param_map=layout.map)
    frames = FrameServer(s, b"k" * 32, timeout=5.0)
    try:
        end = FitEndpoint(frames.address, b"k" * 32, 5.0)
        servers = [shard_task.start_shard(layout, k, settings, end) for k in range(2)]
        expected = {name: opt.slots[name].copy() for name in ("m", "v")}
        weights_part = model.flat_weights
        for k, server in enumerate(servers):
            state = server.state()
            assert int(state["iterations"]) == 7
            for name in ("m", "v"):
                np.testing.assert_array_equal(state[f"slot/{name}"],
                                              layout.values_of(expected[name], model.flat_state[:0], k))
            # The shard steps on: new values, slots and iterations.
            state["values"] = state["values"] + 1.0
            for name in ("m", "v"):
                state[f"slot/{name}"] = state[f"slot/{name}"] * 2.0
            state["iterations"] = np.array(9, np.int64)
            server.restore(state)
        before = model_vector(model)
        s.open_epoch(0)
        for server in servers:
            shard_task.push_values(layout, server, 0, STATS_OF, end)
        s.take()
    finally:
        frames.close()
    np.testing.assert_array_equal(model_vector(model), before + 1.0)
    for name in ("m", "v"):
        np.testing.assert_array_equal(opt.slots[name], expected[name] * 2.0)
    assert opt.iterations == 9
    assert weights_part is model.flat_weights             # written in place
