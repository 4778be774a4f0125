"""The sharded parameter server without Spark: ShardServers behind frame servers in threads,
ShardedClients talking to K = 1…4 of them. Covers the assignment (every row and dense value
on exactly one shard), lossless accumulation from concurrent clients, at-most-once pushes,
the checks before anything changes, the row-sparse optimizer step, and checkpoints."""
import copy
import socket
import threading

import numpy as np
import pytest

from sparkdl.distributed.protocol import Connection, Op, RemoteError
from sparkdl.distributed.shard_layout import ShardLayout, shard_of
from sparkdl.distributed.shards import ShardServer
from sparkdl.distributed.sparse import ParamMap, RowSlice, Table
from sparkdl.distributed.worker import model_vector, set_model_vector
from sparkdl.engine import optimizers
from tests.distributed.sparse_cases import NUM_IDS, assembled, click_model, same, sharded
from tests.distributed.test_parameter_server import run_threads, small_ints, wait_until

KS = [1, 2, 3, 4]


def toy_map(rows=(50, 7), dims=(3, 1), dense=5, state=2):
    tables, at = [], dense
    for i, (r, d) in enumerate(zip(rows, dims)):
        tables.append(Table(f"t{i}", at, r, d, 0))
        at += r * d
    return ParamMap(at, state, dense, tables)


@pytest.mark.parametrize("k", KS)
def test_every_row_and_every_dense_value_lives_on_exactly_one_shard(k):
    layout = ShardLayout(toy_map(), k)
    for t, tab in enumerate(layout.map.tables):
        owned = [layout.owned_ids(s)[t] for s in range(k)]
        assert same(np.sort(np.concatenate(owned)), np.arange(tab.rows).astype(layout.map.id_dtype))
        for s, ids in enumerate(owned):
            assert np.all(shard_of(t, ids, k) == s)
    bounds = layout.dense_bounds
    assert bounds[0][0] == 0 and bounds[-1][1] == layout.map.dense_length
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    vector = np.arange(layout.map.size, dtype=np.float32)
    assert same(layout.assemble([layout.shard_values(vector, s) for s in range(k)]), vector)


def splitmix64_shard(table, i, k):
    """The assignment written out with Python integers: every process computes it alike."""
    mask = (1 << 64) - 1
    x = (i ^ ((table * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & mask)) + 0x9E3779B97F4A7C15 & mask
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & mask
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & mask
    return (x ^ (x >> 31)) % k


def test_the_assignment_is_a_fixed_function_of_table_id_and_shard_count():
    ids = np.array([0, 1, 2, 1000, 2**22 - 1, 2**40])
    for table, k in [(0, 3), (1, 4), (7, 2)]:
        assert shard_of(table, ids, k).tolist() == [splitmix64_shard(table, int(i), k) for i in ids]


def test_a_mode_the_shards_cannot_run_is_refused():
    layout = ShardLayout(toy_map(), 1)
    values = np.zeros(layout.map.size, np.float32)
    with pytest.raises(ValueError, match="hogwild adds weight deltas without a lock"):
        ShardServer(layout, 0, values, rows={0: 1}, mode="hogwild", optimizer=optimizers.SGD())
    with pytest.raises(ValueError, match="expected mode in"):
        ShardServer(layout, 0, values, rows={0: 1}, mode="easgd")
    with pytest.raises(ValueError, match="staleness"):
        ShardServer(layout, 0, values, rows={0: 1}, mode="ssp")


def test_the_hash_spreads_rows_and_depends_on_the_table():
    ids = np.arange(4096)
    counts = np.bincount(shard_of(0, ids, 4), minlength=4)
    assert counts.min() > 4096 // 4 * 0.9
    assert not np.array_equal(shard_of(0, ids, 4), shard_of(1, ids, 4))


@pytest.mark.parametrize("k", KS)
def test_a_pull_returns_the_dense_part_and_only_the_rows_asked_for(k):
    model = click_model()
    vector = model_vector(model)
    with sharded(model, k) as (layout, _, connect):
        m = layout.map
        ids = [np.array([0, 3, 17, 63]), np.array([5, 6])]
        part = connect(0).pull(0, ids)
        expected = m.take(vector, ids)
        assert same(part.dense, expected.dense)
        assert all(same(a, b) for a, b in zip(part.rows, expected.rows))
        # A worker's pulled state: the dense part and the rows asked for, nothing more.
        assert part.nbytes == 4 * m.dense_length + sum(len(i) * (m.id_dtype.itemsize + 4 * t.dim)
                                                        for i, t in zip(ids, m.tables))


def random_update(m, rng, rows=6):
    ids = [np.sort(rng.choice(t.rows, size=min(rows, t.rows), replace=False)) for t in m.tables]
    return RowSlice(small_ints(rng, m.dense_length), ids, [small_ints(rng, len(i), t.dim)
                                                           for i, t in zip(ids, m.tables)])


@pytest.mark.parametrize("k", KS)
def test_concurrent_clients_lose_no_update(k):
    model = click_model(batchnorm=True)
    workers, pushes = 3, 8
    rng = np.random.default_rng(k)
    set_model_vector(model, small_ints(rng, model_vector(model).size))   # sums exact in any order
    expected = model_vector(model)
    with sharded(model, k, rows={p: 100 for p in range(workers)}) as (layout, shards, connect):
        m = layout.map
        plans = [[random_update(m, rng) for _ in range(pushes)] for _ in range(workers)]
        for plan in plans:
            for u in plan:
                full = np.zeros(m.size, np.float32)
                m.put(full, u)
                expected += full

        def worker(p):
            def run():
                client = connect(p)
                client.start()
                for seq, u in enumerate(plans[p]):
                    client.pull(seq, u.ids)
                    assert client.push(seq, 1, u)
                client.done()
            return run
        run_threads(*[worker(p) for p in range(workers)])
        assert same(assembled(layout, shards), expected)
        assert sum(s.stats["pushes"] for s in shards) == k * workers * pushes


def test_a_push_is_applied_at_most_once_and_a_replaced_attempt_is_refused():
    model = click_model()
    with sharded(model, 2) as (layout, shards, connect):
        u = random_update(layout.map, np.random.default_rng(0))
        before = assembled(layout, shards)
        assert connect(0, attempt=0).push(0, 1, u)
        once = assembled(layout, shards)
        assert not connect(0, attempt=1).push(0, 1, u)          # a retry replaying push 0
        assert same(assembled(layout, shards), once) and not same(once, before)
        with pytest.raises(RemoteError, match="which a retry replaced"):
            connect(0, attempt=0).push(1, 1, u)


def test_a_client_sends_no_part_of_a_non_finite_push():
    model = click_model()
    with sharded(model, 2) as (layout, shards, connect):
        before = assembled(layout, shards)
        u = random_update(layout.map, np.random.default_rng(0))
        u.rows[1][-1, 0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            connect(0).push(0, 1, u)
        assert same(assembled(layout, shards), before)


def test_a_shard_refuses_malformed_pushes_before_anything_changes():
    model = click_model()
    with sharded(model, 2) as (layout, shards, connect):
        before = assembled(layout, shards)
        dw, ds = layout.dense_split(0)
        owned = layout.owned_ids(0)[0]
        not_owned = int(np.setdiff1d(np.arange(NUM_IDS), owned)[0])
        id_dtype = layout.map.id_dtype

        def payload(ids, rows=None):
            floats = np.ones(dw + layout.map.tables[0].dim * len(ids) + ds, np.float32)
            if rows is not None:
                floats[dw] = rows
            return np.concatenate([floats.view(np.uint8), np.array(ids, id_dtype).view(np.uint8)])
        cases = [
            ({"counts": [1, 0]}, np.zeros(3, np.uint8), "expected a push of"),
            ({"counts": [1, 0]}, np.zeros(3, np.float32), "expected a push as"),
            ({"counts": [1, 0]}, payload([not_owned]), "that shard 0 holds"),
            ({"counts": [2, 0]}, payload([owned[1], owned[0]]), "sorted unique ids"),
            ({"counts": [2]}, payload([owned[0]]), "expected counts of 2 tables"),
            ({"counts": [1, 0], "samples": 10**6}, payload([owned[0]]), "expected samples between"),
            ({"counts": [1, 0]}, payload([owned[0]], rows=np.inf), "finite"),
        ]
        with Connection(connect.addresses[0], connect.token, 5.0) as conn:
            for meta, array, match in cases:
                meta = {"epoch": 0, "partition": 0, "attempt": 0, "sequence": 0, "samples": 1, **meta}
                with pytest.raises(RemoteError, match=match):
                    conn.request(Op.PUSH, meta, array)
            with pytest.raises(RemoteError, match="that shard 0 holds"):
                conn.request(Op.PULL, {"epoch": 0, "partition": 0, "clock": 0, "counts": [1, 0]},
                             np.array([not_owned], id_dtype))
            with pytest.raises(RemoteError, match="epoch 1 is not running"):
                conn.request(Op.PULL, {"epoch": 1, "partition": 0, "clock": 0, "counts": [0, 0]},
                             np.zeros(0, id_dtype))
        assert same(assembled(layout, shards), before)
        assert sum(s.stats["pushes"] for s in shards) == 0


OPTIMIZERS = [optimizers.SGD(0.1), optimizers.SGD(0.1, momentum=0.9, nesterov=True), optimizers.Adam(0.01),
              optimizers.Adagrad(0.1), optimizers.RMSprop(0.01, momentum=0.5), optimizers.Ftrl(0.1, l1=0.01)]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name + str(getattr(o, "momentum", "")))
def test_the_row_sparse_step_is_the_engines_lazy_step(opt):
    """Gradients mode: a shard steps the pushed rows as ``Optimizer.apply`` with a sparse index
    steps the rows a batch touched (single-process training), slots and all."""
    model = click_model()
    vector = model_vector(model)
    m = ParamMap.from_model(model)
    reference, w = copy.deepcopy(opt), m.weights_size
    rng = np.random.default_rng(1)
    with sharded(model, 3, optimizer=opt) as (layout, shards, connect):
        client = connect(0)
        for seq in range(4):
            u = random_update(m, rng)
            u.dense[m.dense_size:] = 0
            client.push(seq, 2, u)
            grads = np.zeros(m.size, np.float32)
            m.put(grads, u)
            index = np.concatenate([(t.offset + i[:, None] * t.dim + np.arange(t.dim)).reshape(-1)
                                    for i, t in zip(u.ids, m.tables)])
            reference.apply(vector[:w], grads[:w] / np.float32(2), dense_size=m.dense_size, sparse_index=index)
        assert same(assembled(layout, shards), vector)


def test_with_plain_sgd_the_row_sparse_step_equals_the_whole_vector_step():
    model = click_model()
    vector = model_vector(model)
    m = ParamMap.from_model(model)
    dense_opt = optimizers.SGD(0.1)
    rng = np.random.default_rng(2)
    with sharded(model, 2, optimizer=optimizers.SGD(0.1)) as (layout, shards, connect):
        for seq in range(3):
            u = random_update(m, rng)
            connect(0).push(seq, 1, u)
            grads = np.zeros(m.size, np.float32)
            m.put(grads, u)
            dense_opt.apply(vector[:m.weights_size], grads[:m.weights_size])
        assert same(assembled(layout, shards), vector)


@pytest.mark.parametrize("k", [1, 3])
def test_a_sharded_checkpoint_saves_and_resumes(tmp_path, k):
    model = click_model()
    m = ParamMap.from_model(model)
    rng = np.random.default_rng(3)
    updates = [random_update(m, rng) for _ in range(6)]
    for u in updates:
        u.dense[m.dense_size:] = 0
    with sharded(model, k, optimizer=optimizers.Adam(0.01)) as (layout, straight, connect):
        for seq, u in enumerate(updates):
            connect(0).push(seq, 1, u)
        expected = assembled(layout, straight)
    with sharded(model, k, optimizer=optimizers.Adam(0.01)) as (layout, first, connect):
        for seq, u in enumerate(updates[:3]):
            connect(0).push(seq, 1, u)
        for s in first:
            s.save(str(tmp_path / f"shard-{s.shard}.npz"))
    with sharded(click_model(seed=9), k, optimizer=optimizers.Adam(0.01)) as (layout, resumed, connect):
        for s in resumed:
            s.load(str(tmp_path / f"shard-{s.shard}.npz"))
        for seq, u in enumerate(updates[3:], start=3):
            connect(0).push(seq, 1, u)
        assert same(assembled(layout, resumed), expected)
        other = resumed[-1].state() if k > 1 else {**resumed[0].state(), "layout": np.array([0, 2, 1])}
        with pytest.raises(ValueError, match=f"expected the state of shard 0 of {k} "):
            resumed[0].restore(other)


def test_routing_allocates_for_the_ids_at_hand_not_for_the_tables():
    """A worker's client holds a layout: routing a pull of 1000 ids of a 2**30-row table must
    not allocate anything of the table's size."""
    import tracemalloc
    ids = [np.sort(np.random.default_rng(0).choice(2**30, 1000, replace=False)).astype(np.int32)]
    tracemalloc.start()
    try:
        layout = ShardLayout(toy_map(rows=(2**30,), dims=(8,)), 4)
        parts = layout.split(ids)
        merged = layout.merge(ids, [[np.full((len(p[0]), 8), k, np.float32)] for k, p in enumerate(parts)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert sum(len(p[0]) for p in parts) == 1000
    assert same(merged[0][:, 0], shard_of(0, ids[0], 4).astype(np.float32))


@pytest.mark.parametrize("k", [1, 3])
def test_ssp_holds_a_fast_worker_back_on_every_shard_until_the_slow_one_pushes(k):
    model = click_model()
    m = ParamMap.from_model(model)
    rng = np.random.default_rng(4)
    u, v = random_update(m, rng), random_update(m, rng)
    with sharded(model, k, rows={0: 10, 1: 10}, mode="ssp", staleness=0) as (layout, shards, connect):
        fast, slow = connect(0), connect(1)
        fast.start()
        slow.start()
        fast.push(0, 1, u)                          # fast is at clock 1, slow at 0
        seen = {}
        slow_pushed = threading.Event()

        def pull_ahead():
            seen["pulled"] = fast.pull(1, u.ids)
            seen["after_slow"] = slow_pushed.is_set()
        thread = threading.Thread(target=pull_ahead, daemon=True)
        thread.start()
        wait_until(lambda: sum(s.stats["waits"] for s in shards) == k, what="the pull to wait on each shard")
        assert thread.is_alive()
        slow_pushed.set()                           # set first: the shards may release fast at once
        slow.push(0, 1, v)
        thread.join(5)
        assert not thread.is_alive() and seen["after_slow"]
        assert same(seen["pulled"].dense, layout.map.dense(assembled(layout, shards)))


def test_ssp_gives_up_after_its_timeout_naming_the_slow_partition():
    model = click_model()
    u = random_update(ParamMap.from_model(model), np.random.default_rng(5))
    with sharded(model, 2, rows={3: 10, 7: 10}, mode="ssp", staleness=0, timeout=0.2) as (_, shards, connect):
        fast, slow = connect(3), connect(7)
        fast.start()
        slow.start()
        fast.push(0, 1, u)
        with pytest.raises(RemoteError, match=r"partition 3 at clock 1 waited 0\.2 s for partition 7 \(clock 0\)"):
            fast.pull(1, u.ids)
        slow.done()
        assert same(fast.pull(1, u.ids).rows[0], connect(3).pull(0, u.ids).rows[0])   # usable again


def test_a_client_reopens_a_connection_that_broke():
    model = click_model()
    u = random_update(ParamMap.from_model(model), np.random.default_rng(6))
    with sharded(model, 3) as (layout, shards, connect):
        client = connect(0)
        assert client.push(0, 1, u)
        for conn in client._conns:                  # the shards' side went away (idle timeout, blip)
            conn.sock.shutdown(socket.SHUT_RDWR)
        assert client.push(1, 1, u)
        assert not client.push(1, 1, u)             # and a replay is still applied at most once
        assert all(s.stats["pushes"] == 2 for s in shards)


def test_clients_in_this_process_lose_no_update_on_shards_in_another():
    """The client and the shards hash ids in different processes (a spawned interpreter)."""
    import multiprocessing

    from sparkdl.distributed import protocol
    from sparkdl.distributed.shard_client import ShardedClient
    from tests.distributed.sparse_cases import serve_shards_in_child
    model = click_model()
    rng = np.random.default_rng(8)
    set_model_vector(model, small_ints(rng, model_vector(model).size))
    layout = ShardLayout(ParamMap.from_model(model), 3)
    expected = model_vector(model)
    token = protocol.new_token()
    plans = [[random_update(layout.map, rng) for _ in range(5)] for _ in range(2)]
    for u in (u for plan in plans for u in plan):
        full = np.zeros(layout.map.size, np.float32)
        layout.map.put(full, u)
        expected += full
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    start = model_vector(model)
    child = ctx.Process(target=serve_shards_in_child, daemon=True,
                        args=(layout, [layout.shard_values(start, k) for k in range(3)], token, there))
    child.start()
    try:
        assert here.poll(60), "the child did not serve its shards"
        addresses = here.recv()

        def worker(p):
            def run():
                client = ShardedClient(layout, addresses, token, 5.0, 0, p, 0)
                try:
                    for seq, u in enumerate(plans[p]):
                        assert client.push(seq, 1, u)
                finally:
                    client.close()
            return run
        run_threads(worker(0), worker(1))
        here.send("stop")
        assert here.poll(30), "the child did not answer"
        assert same(layout.assemble(here.recv()), expected)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


@pytest.mark.parametrize("gradients", [False, True])
def test_deltas_are_divided_by_workers_as_the_parameter_server_divides_them(gradients):
    """Weight deltas, and the moving statistics' deltas in gradients mode, count 1/workers."""
    model = click_model(batchnorm=True)
    m = ParamMap.from_model(model)
    rng = np.random.default_rng(9)
    set_model_vector(model, small_ints(rng, m.size))
    start = model_vector(model)
    u = random_update(m, rng)
    u.dense *= 2
    u.rows = [r * 2 for r in u.rows]
    opt = optimizers.SGD(1.0) if gradients else None
    with sharded(model, 2, workers=2, optimizer=opt) as (layout, shards, connect):
        connect(0).push(0, 2, u)
        full = np.zeros(m.size, np.float32)
        m.put(full, u)
        step = full / 2                   # SGD(1.0) on gradient sums of 2 samples: the mean
        assert same(assembled(layout, shards), start + step if not gradients else
                    np.concatenate([start[:m.weights_size] - step[:m.weights_size],
                                    start[m.weights_size:] + step[m.weights_size:]]))
