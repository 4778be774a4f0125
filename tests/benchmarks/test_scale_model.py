"""The byte counts of ``benchmarks/scale_model.py`` against what sparkdl sends: the ring's
per-worker bytes against ``RingPeer.bytes_sent`` of a real all-reduce among three ranks in
threads (a size the ranks do not divide), and the hub's driver bytes against the pull and
push of every worker. No timing is asserted."""
import numpy as np
import pytest

from benchmarks import scale_model as sm
from tests.distributed.test_ring import run_ring


def ring_bytes_sent(n, size):
    """Each rank's ``bytes_sent`` after one all-reduce of ``size`` float32 values."""
    sent = []
    run_ring([np.full(size, r, np.float32) for r in range(n)], [1] * n, sent=sent)
    return sent


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_bytes_match_what_the_ring_sends(n):
    size = 1001
    sent = ring_bytes_sent(n, size)
    driver, per_worker = sm.ring_bytes(n, size)
    assert driver == 0
    assert sum(sent) == pytest.approx(n * per_worker)          # 2·M·(N−1) over all ranks
    # segments differ by one value, so a rank sends its share within two values
    assert all(abs(s - per_worker) <= 2 * 4 for s in sent)


@pytest.mark.parametrize("n", [1, 2, 3, 256])
def test_hub_driver_bytes_are_a_pull_and_a_push_per_worker(n):
    size = 1001
    driver, per_worker = sm.hub_bytes(n, size)
    assert driver == n * 2 * np.zeros(size, np.float32).nbytes
    assert per_worker == 4 * size
    int8 = sm.Codec("int8", 0.25)
    assert sm.hub_bytes(n, size, int8)[0] == pytest.approx(driver / 4)
    assert sm.ring_bytes(n, size, int8)[1] == pytest.approx(sm.ring_bytes(n, size)[1] / 4)


def test_one_rank_sends_nothing():
    assert ring_bytes_sent(1, 1001) == [0]
    assert sm.ring_bytes(1, 1001) == (0.0, 0.0)
