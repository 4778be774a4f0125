"""The driver's side of shards hosted by a fit's tasks (``ShardSink``) and the worker a task
trains with (``ShardTask``), without Spark."""
import numpy as np
import pytest

from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused
from sparkdl.distributed.shard_task import STATS, ShardSettings, ShardSink, ShardTask, layout_of
from sparkdl.distributed.worker import RoundSpec, model_vector
from sparkdl.engine import optimizers
from tests.distributed.sparse_cases import click_model

STATS_OF = {k: 1 for k in STATS}


def sink(k=2):
    model = click_model()
    return model, ShardSink(layout_of(model, k), model_vector(model))


def test_a_shard_starts_from_its_part_of_the_drivers_vector_at_the_running_epoch():
    model, s = sink()
    s.open_epoch(4)
    reply = s.handle(Frame(Op.PULL, {"shard": 1}))
    assert reply.meta == {"epoch": 4}
    np.testing.assert_array_equal(reply.array, s.layout.shard_values(model_vector(model), 1))


def test_the_driver_assembles_the_values_every_shard_pushed():
    model, s = sink()
    s.open_epoch(0)
    changed = model_vector(model) + 1.0
    for k in (1, 0):
        s.handle(Frame(Op.PUSH, {"shard": k, "epoch": 0, "stats": STATS_OF}, s.layout.shard_values(changed, k)))
    vector, stats = s.take()
    np.testing.assert_array_equal(vector, changed)
    assert stats == [STATS_OF, STATS_OF]
    # New shards (a retried stage) start from what was taken.
    np.testing.assert_array_equal(s.handle(Frame(Op.PULL, {"shard": 0})).array, s.layout.shard_values(changed, 0))


def test_an_epoch_missing_a_shards_values_says_which():
    _, s = sink(3)
    s.open_epoch(2)
    s.handle(Frame(Op.PUSH, {"shard": 1, "epoch": 2, "stats": STATS_OF},
                   s.layout.shard_values(s.vector, 1)))
    with pytest.raises(RuntimeError, match=r"epoch 3 ended without the values of shards 0, 2"):
        s.take()


def good(s):
    return s.layout.shard_values(s.vector, 0)


def with_nan(s):
    values = good(s)
    values[0] = np.nan
    return values


@pytest.mark.parametrize("op, meta, values, message", [
    (Op.PULL, {"shard": 2}, lambda s: None, r"expected a shard in \[0, 2\), received 2"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "stats": STATS_OF}, lambda s: np.zeros(3, np.float32),
     r"expected shard 0's \d+ float32 values"),
    (Op.PUSH, {"shard": 0, "epoch": 1, "stats": STATS_OF}, good, r"epoch 1 is not running \(running: 0\)"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "stats": {}}, good, r"expected the statistics"),
    (Op.PUSH, {"shard": 0, "epoch": 0, "stats": STATS_OF}, with_nan, r"NaN"),
    (Op.CLOCK, {"shard": 0}, lambda s: None, r"is not served here"),
])
def test_a_bad_request_to_the_driver_is_refused(op, meta, values, message):
    _, s = sink()
    with pytest.raises(Refused, match=message):
        s.handle(Frame(op, meta, values(s)))
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
