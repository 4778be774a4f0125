"""Overlapping communication with compute, without Spark: a worker of the async modes that
pulls ahead and pushes in the background (``PullsAhead``) against a real parameter server in
this process. A lone worker trains exactly as in lock step (the same bits), no push is lost or
doubled, compressed pushes keep their error feedback, and several workers in ssp with
staleness 0 do not wait for one another's background requests forever, and closing a
client cuts off what waits in the background."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.distributed import protocol, worker
from sparkdl.distributed.parameter_server import Client, ParameterServer
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.worker import RoundSpec
from sparkdl.models import Sequential

f32 = np.float32
ROWS = 24


def model_and_data(seed=0):
    """A small two-layer model with a moving statistic (BatchNormalization) and its rows."""
    model = Sequential([layers.Dense(6, activation="relu", input_shape=(4,)),
                        layers.BatchNormalization(), layers.Dense(3, activation="softmax")])
    model.compile(optimizers.SGD(0.1, momentum=0.5), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    model.set_flat_weights(rng.normal(scale=0.5, size=model.flat_weights.size).astype(f32))
    x = rng.normal(size=(ROWS, 4)).astype(f32)
    y = rng.integers(0, 3, size=ROWS).astype(np.int64)
    return model, [x], y


@contextlib.contextmanager
def served(vector, **kwargs):
    token = protocol.new_token()
    ps = ParameterServer(vector, **dict({"rows": {p: ROWS for p in range(4)}}, **kwargs))
    ps.begin_epoch(0)
    with FrameServer(ps, token, timeout=10.0) as server:
        yield ps, server, token


def epoch(mode="async", frequency=1, overlap=False, aggregate="weights", compression=None,
          workers=1, staleness=None, partitions=(0,)):
    """Train ``partitions`` (one thread each) through one epoch against one server; returns
    ``(server vector, stats, each worker's model weights and residual)``."""
    model, xs, y = model_and_data()
    vector = worker.model_vector(model)
    w = model.flat_weights.size
    options = {"staleness": staleness} if mode == "ssp" else {}
    optimizer = optimizers.SGD(0.1) if aggregate == "gradients" else None
    with served(vector, mode=mode, workers=workers, optimizer=optimizer, weights_size=w,
                compression=compression, **options) as (ps, server, token):
        results, errors = {}, []

        def run(partition):
            local, _, _ = model_and_data()
            client = Client(server.address, token, 10.0, 0, partition, 0, vector.size, server.security,
                            compression)
            spec = RoundSpec(round=0, seed=1, batch_size=4, frequency=frequency, aggregate=aggregate,
                             mode=mode, compression=compression, overlap=overlap,
                             optimizer=local.optimizer.get_config())
            try:
                result = worker.run_async_epoch(local, xs, y, spec, partition, client)
                results[partition] = (result, local.get_flat_weights(), client.residual)
            except BaseException as exc:      # noqa: BLE001 - re-raised in the test's thread
                errors.append(exc)
            finally:
                client.close()
        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in partitions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a worker did not finish"
        if errors:
            raise errors[0]
        return ps.snapshot(), dict(ps.stats), results


@pytest.mark.parametrize("mode, frequency", [("async", 1), ("async", 2), ("hogwild", 1), ("adag", 3),
                                             ("ssp", 1)])
def test_a_lone_worker_that_overlaps_trains_exactly_as_in_lock_step(mode, frequency):
    staleness = 1 if mode == "ssp" else None
    plain, plain_stats, plain_results = epoch(mode, frequency, staleness=staleness)
    ahead, ahead_stats, ahead_results = epoch(mode, frequency, overlap=True, staleness=staleness)
    np.testing.assert_array_equal(ahead, plain)
    np.testing.assert_array_equal(ahead_results[0][1], plain_results[0][1])   # the worker's own model
    assert ahead_results[0][0].loss_sum == plain_results[0][0].loss_sum
    assert ahead_stats["pushes"] == plain_stats["pushes"] == -(-ROWS // 4) // frequency
    assert ahead_stats["duplicates"] == 0


def test_the_change_a_worker_adds_is_the_servers_share_of_it_with_several_workers():
    """With ``workers=3`` the server divides a change by 3; a lone pushing partition that
    pulls ahead adds the same third, so it still trains as in lock step."""
    plain, _, _ = epoch("async", 2, workers=3)
    ahead, _, _ = epoch("async", 2, overlap=True, workers=3)
    np.testing.assert_array_equal(ahead, plain)


def test_gradients_pulled_ahead_are_one_push_behind_and_every_push_is_applied():
    plain, plain_stats, _ = epoch("async", 1, aggregate="gradients")
    ahead, ahead_stats, _ = epoch("async", 1, overlap=True, aggregate="gradients")
    assert ahead_stats["pushes"] == plain_stats["pushes"] == ROWS // 4
    assert not np.array_equal(ahead, plain)       # the server's optimizer step is not added ahead
    np.testing.assert_allclose(ahead, plain, atol=0.1)


@pytest.mark.parametrize("compression", ["fp16", "int8"])
def test_compressed_pushes_pulled_ahead_keep_their_error_feedback(compression):
    plain, plain_stats, plain_results = epoch("async", 1, compression=compression)
    ahead, ahead_stats, ahead_results = epoch("async", 1, overlap=True, compression=compression)
    assert ahead_stats["pushes"] == plain_stats["pushes"] == ROWS // 4
    residual = ahead_results[0][2]
    assert residual is not None and residual.shape == plain_results[0][2].shape and np.any(residual)
    np.testing.assert_allclose(ahead, plain, atol=0.05)


def test_ssp_workers_with_staleness_zero_that_pull_ahead_do_not_wait_for_each_other_forever():
    vector, stats, results = epoch("ssp", 1, overlap=True, staleness=0, partitions=(0, 1, 2))
    assert stats["pushes"] == 3 * (ROWS // 4)
    assert sorted(results) == [0, 1, 2] and np.all(np.isfinite(vector))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_diverged_worker_that_pulls_ahead_sends_nothing_non_finite_and_ends_its_epoch():
    model, xs, y = model_and_data()
    xs = [xs[0].copy()]
    xs[0][8:] = np.inf                      # the third batch's loss is not finite
    vector = worker.model_vector(model)
    with served(vector, mode="async") as (ps, server, token):
        client = Client(server.address, token, 10.0, 0, 0, 0, vector.size, server.security)
        spec = RoundSpec(round=0, seed=1, batch_size=4, frequency=1, aggregate="weights", mode="async",
                         overlap=True)
        try:
            result = worker.run_async_epoch(model, xs, y, spec, 0, client)
        finally:
            client.close()
        assert result.diverged and ps.stats["pushes"] < ROWS // 4
        assert np.all(np.isfinite(ps.snapshot()))


def test_closing_a_client_cuts_off_a_pull_waiting_in_the_background():
    """An ssp pull (staleness 0) waits at the server for a partition that does not push; the
    worker gives up (its task failed): ``close`` returns without waiting for the server."""
    model, _, _ = model_and_data()
    vector = worker.model_vector(model)
    with served(vector, mode="ssp", staleness=0) as (ps, server, token):
        slow = Client(server.address, token, 10.0, 0, 1, 0, vector.size, server.security)
        client = Client(server.address, token, 10.0, 0, 0, 0, vector.size, server.security)
        try:
            slow.start()
            client.start()
            client.push(0, 4, np.zeros(vector.size, f32))
            client.pull_request(1)          # one push ahead of partition 1: waits for it
            client.close()
            slow.push(0, 4, np.zeros(vector.size, f32))     # lets the server's wait end
            assert ps.stats["pushes"] == 2
        finally:
            client.close()
            slow.close()
