"""A task of a one-job fit (``sparkdl.distributed.fit_task``) without Spark: tasks in threads
carry out the coordinator's training orders, push to the round exchange and report, giving what
``worker.run_round`` gives on each partition's block."""
import threading

import numpy as np
import pytest

from sparkdl.distributed import exchange, fit_task, worker
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.distributed.server import FrameServer

TOKEN = b"t" * 32


def test_sync_task_loop_trains_pushes_and_reports_like_run_round():
    """run_fit_task in two threads against a coordinator wrapping the round exchange: the
    driver's mean is the mean of run_round on each partition's block, weighted by the rows of
    the partitions (6 and 14: an unweighted mean would differ)."""
    from sparkdl import layers
    from sparkdl.engine import optimizers
    from sparkdl.models import Sequential

    def model():
        net = Sequential([layers.Dense(3, input_shape=(4,), activation="softmax")])
        net.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return net

    rng = np.random.default_rng(0)
    blocks = [([rng.random((n, 4), dtype=np.float32)], rng.integers(0, 3, n)) for n in (6, 14)]
    driver = model()
    pull, push = exchange.round_layouts(driver, "weights")
    rounds = exchange.RoundExchange(push)
    coordinator = Coordinator(rounds, partitions=[0, 1], poll=0.2)
    with FrameServer(coordinator, TOKEN, timeout=5.0) as server:
        end = fit_task.FitEndpoint(server.address, TOKEN, 5.0, pull, push)
        nets = [model(), model()]
        threads = [threading.Thread(target=fit_task.run_fit_task, args=(nets[p], blocks[p], None, p, end))
                   for p in range(2)]
        for t in threads:
            t.start()
        spec = worker.RoundSpec(round=0, seed=1, batch_size=4, frequency="epoch", aggregate="weights")
        assert pull.names == ("weights",)          # plain SGD: no slots to average
        payload = pull.pack({"weights": driver.flat_weights})
        rounds.open_round(0, payload, {}, partitions={0: 6, 1: 14})
        coordinator.order("train", {"spec": vars(spec), "iterations": 0, "label": "sparkdl round 1/1"}, payload)
        reports = coordinator.wait_reports(10.0)
        total, received = rounds.close_round()
        coordinator.stop()
        for t in threads:
            t.join(5)
    expected = [worker.run_round(model(), *blocks[p], spec, p, driver.flat_weights, None, {}, 0) for p in range(2)]
    assert received == {0: 6, 1: 14}
    mean = (total[:driver.flat_weights.size] / 20).astype(np.float32)
    weighted = (6 * expected[0].vector.astype(np.float64) + 14 * expected[1].vector) / 20
    np.testing.assert_allclose(mean, weighted, rtol=1e-6, atol=1e-7)
    assert np.abs(weighted - (expected[0].vector + expected[1].vector) / 2).max() > 1e-4
    results = [fit_task.report_result(*reports[p]) for p in range(2)]
    assert [r.samples for r in results] == [6, 14] and [r.steps for r in results] == [2, 4]
    for got, want in zip(results, expected):
        assert got.loss_sum == pytest.approx(want.loss_sum)
        np.testing.assert_array_equal(got.metric_states[0], want.metric_states[0])


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_compressed_rounds_push_changes_from_the_decoded_pull_through_error_feedback(name):
    """Two compressed rounds of two tasks: each task trains from the decoded weights and
    pushes the encoding of its change plus what rounding held back from its previous push;
    the driver's sums equal, bit for bit, that computed from ``run_round`` and the codec."""
    from sparkdl import layers
    from sparkdl.distributed.compression import get_codec
    from sparkdl.engine import optimizers
    from sparkdl.models import Sequential

    def model():
        net = Sequential([layers.Dense(3, input_shape=(4,), activation="softmax")])
        net.compile(optimizers.SGD(0.5), "sparse_categorical_crossentropy")
        return net

    codec = get_codec(name)
    rng = np.random.default_rng(3)
    blocks = [([rng.random((n, 4), dtype=np.float32)], rng.integers(0, 3, n)) for n in (6, 14)]
    driver = model()
    pull, push = exchange.round_layouts(driver, "weights")
    rounds = exchange.RoundExchange(push, codec=codec)
    coordinator = Coordinator(rounds, partitions=[0, 1], poll=0.2)
    specs = [worker.RoundSpec(round=r, seed=1, batch_size=4, frequency="epoch", aggregate="weights")
             for r in range(2)]
    payloads = [driver.get_flat_weights(), None]
    sums = []
    with FrameServer(coordinator, TOKEN, timeout=5.0) as server:
        end = fit_task.FitEndpoint(server.address, TOKEN, 5.0, pull, push, compression=name)
        threads = [threading.Thread(target=fit_task.run_fit_task, args=(model(), blocks[p], None, p, end))
                   for p in range(2)]
        for t in threads:
            t.start()
        for r, spec in enumerate(specs):
            rounds.open_round(r, payloads[r], {}, partitions={0: 6, 1: 14})
            coordinator.order("train", {"spec": vars(spec), "iterations": 0, "label": "sparkdl round",
                                        "codec": name}, codec.encode(payloads[r]))
            assert coordinator.wait_reports(10.0) is not None
            total, received = rounds.close_round()
            assert received == {0: 6, 1: 14}
            sums.append(total.copy())
            if r == 0:
                payloads[1] = (total / 20).astype(np.float32) + payloads[0]
        coordinator.stop()
        for t in threads:
            t.join(5)
    residuals = [np.zeros(payloads[0].size, np.float32) for _ in range(2)]
    unfed = []
    for r, spec in enumerate(specs):
        pulled = codec.decode(codec.encode(payloads[r]), payloads[r].size)
        expected, without = None, None
        for p, n in enumerate((6, 14)):
            change = worker.run_round(model(), *blocks[p], spec, p, pulled, None, {}, 0).vector - pulled
            corrected = change + residuals[p]
            sent = codec.decode(codec.encode(corrected), corrected.size)
            residuals[p] = corrected - sent
            term = sent.astype(np.float64) * n
            expected = term if expected is None else expected + term
            plain = codec.decode(codec.encode(change), change.size).astype(np.float64) * n
            without = plain if without is None else without + plain
        assert sums[r].tobytes() == expected.tobytes()
        unfed.append(without.tobytes() != expected.tobytes())
    assert unfed == [False, True]          # the second round carries the first's residuals
