"""The row-sparse async epoch against K shards equals the whole-vector epoch against the
parameter server: same data, same seeds, one worker, in weights and gradients mode."""
import copy

import numpy as np
import pytest

from sparkdl.distributed import protocol
from sparkdl.distributed.parameter_server import Client, ParameterServer
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.sparse import ParamMap
from sparkdl.distributed.sparse_worker import compact_model, run_sparse_async_epoch
from sparkdl.distributed.worker import RoundSpec, model_vector, run_async_epoch
from sparkdl.engine import optimizers
from sparkdl.engine.training import BatchPlan
from tests.distributed.sparse_cases import ROWS, assembled, click_block, click_model, same, sharded


def whole_vector_epochs(model, xs, y, specs, server_optimizer=None, **server):
    """The parameter server's vector after ``run_async_epoch`` of partition 0 for each spec."""
    worker = copy.deepcopy(model)
    token = protocol.new_token()
    ps = ParameterServer(model_vector(model), rows={0: ROWS}, optimizer=copy.deepcopy(server_optimizer),
                         weights_size=model.flat_weights.size, **server)
    with FrameServer(ps, token, timeout=5.0) as server:
        for spec in specs:
            ps.begin_epoch(spec.round)
            client = Client(server.address, token, 5.0, spec.round, 0, 0, ps.vector.size)
            try:
                run_async_epoch(worker, xs, y, spec, 0, client)
            finally:
                client.close()
    return ps.snapshot()


def row_sparse_epochs(model, xs, y, specs, k, server_optimizer=None, capacity=None, **server):
    """The shards' vector after ``run_sparse_async_epoch`` for each spec, and the bytes pushed.
    The worker's copies of the rows it does not pull are NaN: they must never be read. With
    ``capacity``, the worker is a compact model of that many rows per table."""
    m = ParamMap.from_model(model)
    worker = copy.deepcopy(model) if capacity is None else compact_model(model, capacity)
    worker.flat_weights[m.dense_size:] = np.nan
    pushed = 0
    with sharded(model, k, optimizer=server_optimizer, **server) as (layout, shards, connect):
        for spec in specs:
            for s in shards:
                s.begin_epoch(spec.round)
            client = connect(0, epoch=spec.round)
            run_sparse_async_epoch(worker, xs, y, spec, 0, client, m)
            pushed += client.stats["bytes_pushed"]
        return assembled(layout, shards), pushed


def specs(aggregate, frequency=3, epochs=2, mode="async", batch_size=32):
    return [RoundSpec(round=e, seed=5, batch_size=batch_size, frequency=frequency, aggregate=aggregate, mode=mode)
            for e in range(epochs)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_weights_mode_equals_the_whole_vector_path(k):
    model = click_model(optimizers.SGD(0.05, momentum=0.9))
    xs, y = click_block(model)
    expected = whole_vector_epochs(model, xs, y, specs("weights"))
    got, _ = row_sparse_epochs(model, xs, y, specs("weights"), k)
    assert not same(expected, model_vector(model))
    assert same(got, expected)


@pytest.mark.parametrize("mode,frequency", [("hogwild", "batch"), ("ssp", "epoch")])
def test_the_other_async_modes_with_one_worker_equal_the_whole_vector_path(mode, frequency):
    model = click_model(optimizers.Adam(0.01))
    xs, y = click_block(model)
    plan = specs("weights", frequency, epochs=2, mode=mode)
    server = {"mode": mode, "staleness": 1 if mode == "ssp" else None}
    expected = whole_vector_epochs(model, xs, y, plan, **server)
    assert same(row_sparse_epochs(model, xs, y, plan, 2, **server)[0], expected)


def test_gradients_mode_with_plain_sgd_equals_the_whole_vector_path():
    model = click_model()
    xs, y = click_block(model)
    opt = optimizers.SGD(0.1)
    expected = whole_vector_epochs(model, xs, y, specs("gradients"), opt)
    got, _ = row_sparse_epochs(model, xs, y, specs("gradients"), 3, opt)
    assert not same(expected, model_vector(model))
    assert same(got, expected)


def test_a_push_carries_the_dense_part_and_the_rows_its_batches_changed():
    model = click_model()
    xs, y = click_block(model)
    m = ParamMap.from_model(model)
    plan = specs("weights", frequency=2, epochs=1)
    _, pushed = row_sparse_epochs(model, xs, y, plan, 1)
    per_row = sum(m.id_dtype.itemsize + 4 * t.dim for t in m.tables)   # both tables read the same ids
    expected = 0
    for a in range(0, -(-ROWS // 32), 2):
        batches = BatchPlan(ROWS, 32, (5, 0, 0), a, a + 2).iterate(model, xs, y)
        ids = np.unique(np.concatenate([xb[0].reshape(-1) for _, xb, _ in batches]))
        expected += 4 * m.dense_length + len(ids) * per_row
    assert pushed == expected


def test_a_compact_worker_holds_the_rows_of_one_stretch():
    model = click_model()
    m = ParamMap.from_model(model)
    assert m.capacity(3, 32) == [64, 64]            # at most the table
    capacity = m.capacity(2, 1)                     # 2 batches of 1 example of 9 ids
    local = compact_model(model, capacity)
    assert [t.rows for t in ParamMap.from_model(local).tables] == capacity == [18, 18]
    assert local.flat_weights.size == m.dense_size + sum(c * t.dim for c, t in zip(capacity, m.tables))
    assert same(local.flat_weights[:m.dense_size], model.flat_weights[:m.dense_size])


@pytest.mark.parametrize("aggregate", ["weights", "gradients"])
def test_a_compact_worker_pushes_what_the_whole_vector_path_pushes(aggregate):
    model = click_model(optimizers.SGD(0.05))
    xs, y = click_block(model)
    opt = optimizers.SGD(0.1) if aggregate == "gradients" else None
    plan = specs(aggregate, frequency=2, epochs=1, batch_size=2)
    capacity = ParamMap.from_model(model).capacity(2, 2)     # 36 of the table's 64 rows
    got, _ = row_sparse_epochs(model, xs, y, plan, 2, opt, capacity=capacity)
    assert same(got, whole_vector_epochs(model, xs, y, plan, opt))


def test_in_gradients_mode_a_compact_worker_equals_a_whole_table_worker_for_any_server_optimizer():
    model = click_model()
    xs, y = click_block(model)
    plan = specs("gradients", frequency=2)
    opt = optimizers.Adam(0.01)
    whole_tables, _ = row_sparse_epochs(model, xs, y, plan, 3, opt)
    assert same(row_sparse_epochs(model, xs, y, plan, 3, opt, capacity=[64, 64])[0], whole_tables)


def test_a_compact_worker_too_small_for_a_stretch_says_so():
    model = click_model()
    xs, y = click_block(model)
    with pytest.raises(ValueError, match="the stretch touches .* rows, the compact model holds 5"):
        row_sparse_epochs(model, xs, y, specs("weights"), 1, capacity=[5, 5])


def test_a_compact_worker_refuses_ids_that_feed_another_layer_too():
    from sparkdl.engine import layers
    from sparkdl.engine.model import Model
    ids = layers.Input((3,), dtype="int64")
    h = layers.Concatenate()([layers.Flatten()(layers.Embedding(10, 2)(ids)), layers.Dense(2)(ids)])
    model = Model(inputs=ids, outputs=layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="to feed embedding tables only"):
        compact_model(model, [4])
