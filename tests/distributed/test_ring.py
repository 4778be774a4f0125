"""The ring all-reduce (``sparkdl.distributed.ring``) in threads, without Spark: the mean of
N = 1..5 ranks equals, bit for bit, a float64 sum in rank order (the driver hub's), for
sizes that N does not divide, run after run; a peer with another token is refused; a peer
that dies mid-ring ends the round with an error naming it and the round."""
import threading

import numpy as np
import pytest

from sparkdl.distributed import compression, protocol, ring
from sparkdl.errors import AuthenticationError


def reference(vectors, samples, ranges):
    """The hub's mean: float64, partition order, weighted ranges times samples, one rounding."""
    total = None
    for x, n in zip(vectors, samples):
        term = x.astype(np.float64)
        for a, b, weighted in ranges:
            if weighted:
                term[a:b] *= n
        total = term if total is None else total + term
    return (total / sum(samples)).astype(np.float32)


def run_ring(vectors, samples, ranges=None, rounds=(0,), timeout=10.0, token=None, codec=None, reset=(),
             sent=None):
    """Every rank's ``(means per round, infos of the last round)``, each rank in a thread;
    ``reset``: the rounds before which every rank zeroes its error feedback; ``sent``: a list
    that receives each rank's ``bytes_sent``."""
    n, size = len(vectors), vectors[0].size
    token = token or protocol.new_token()
    peers = [ring.RingPeer(r, n, size, token, timeout, codec=codec) for r in range(n)]
    for p in peers:
        p.connect([q.address for q in peers])
    results, errors = [None] * n, []

    def rank(r):
        try:
            means = []
            for round_index in rounds:
                if round_index in reset:
                    peers[r].reset_residuals()
                mean, infos = peers[r].allreduce(vectors[r], round_index, {"samples": samples[r], "steps": r},
                                                 ranges)
                means.append(mean.copy())
            results[r] = (means, infos)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for p in peers:
            p.close()
    assert not errors, errors
    if sent is not None:
        sent.extend(p.bytes_sent for p in peers)
    return results


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [1, 7, 1001])
def test_mean_is_bit_identical_to_the_float64_rank_order_sum_and_run_to_run(n, size):
    rng = np.random.default_rng(n * 1000 + size)
    vectors = [(rng.standard_normal(size) * 10 ** rng.uniform(-3, 3, size)).astype(np.float32) for _ in range(n)]
    samples = [int(s) for s in rng.integers(1, 700, n)]
    ranges = [(0, size // 2, False), (size // 2, size, True)]      # gradients, then weighted statistics
    expected = reference(vectors, samples, ranges)
    first = run_ring(vectors, samples, ranges, rounds=(0, 1))
    again = run_ring(vectors, samples, ranges, rounds=(0,))
    for means, infos in first + again:
        for mean in means:
            assert mean.tobytes() == expected.tobytes()
        assert [i["samples"] for i in infos] == samples and [i["steps"] for i in infos] == list(range(n))


def test_every_segment_is_summed_from_rank_0_whichever_rank_owns_it():
    """2**60, -2**60 and 1 sum to 1 in rank order, to 0 from rank 2 on (as a plain ring
    reduce-scatter would add the segment rank 2 starts): each of the three segments must be 1/3."""
    big = np.float32(2.0 ** 60)
    vectors = [np.full(3, big), np.full(3, -big), np.ones(3, np.float32)]
    for means, _ in run_ring(vectors, [1, 1, 1]):
        assert means[0].tolist() == [np.float32(1 / 3)] * 3


def test_segments_differ_by_at_most_one_and_cover_the_vector():
    for size in range(0, 23):
        for n in range(1, 7):
            bounds = ring.segment_bounds(size, n)
            sizes = [b - a for a, b in bounds]
            assert bounds[0][0] == 0 and bounds[-1][1] == size and max(sizes) - min(sizes) <= 1
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(n - 1))


def test_a_vector_smaller_than_the_ring_and_a_rank_with_no_samples():
    vectors = [np.full(2, r + 1, np.float32) for r in range(4)]
    (means, _), *_ = run_ring(vectors, [3, 0, 1, 2])
    np.testing.assert_array_equal(means[0], reference([vectors[0], vectors[2], vectors[3]], [3, 1, 2],
                                                      [(0, 2, True)]))


def test_a_rank_that_diverged_gives_no_rank_a_mean_and_every_rank_knows_who():
    n, token = 3, protocol.new_token()
    peers = [ring.RingPeer(r, n, 10, token, 10.0) for r in range(n)]
    for p in peers:
        p.connect([q.address for q in peers])
    out = [None] * n

    def rank(r):
        out[r] = peers[r].allreduce(None if r == 1 else np.ones(10, np.float32), 0, {"samples": 5})

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for p in peers:
        p.close()
    for mean, infos in out:
        assert mean is None and [i["diverged"] for i in infos] == [False, True, False]


def test_a_peer_with_another_token_is_refused():
    token = protocol.new_token()
    honest = ring.RingPeer(0, 2, 8, token, 2.0)
    stranger = ring.RingPeer(1, 2, 8, protocol.new_token(), 2.0)
    try:
        for p in (honest, stranger):
            p.connect([honest.address, stranger.address])
        with pytest.raises(AuthenticationError, match="rank 0 refused rank 1's connection in round 0"):
            stranger.allreduce(np.ones(8, np.float32), 0, {"samples": 1})
        assert honest.server.stats["refused"] == 1 and not honest.mailbox._frames
        # Authentication is mutual: the stranger's server refuses the honest rank as well.
        with pytest.raises(AuthenticationError, match="rank 1 refused rank 0's connection in round 0"):
            honest.allreduce(np.ones(8, np.float32), 0, {"samples": 1})
        assert stranger.server.stats["refused"] == 1 and not stranger.mailbox._frames
    finally:
        honest.close()
        stranger.close()


def test_a_stale_or_misdirected_segment_is_refused():
    token = protocol.new_token()
    with ring.RingPeer(0, 3, 9, token, 2.0, attempt=1) as peer:
        with protocol.Connection(peer.address, token, 2.0) as conn:
            base = {"round": 0, "rank": 1, "attempt": 1, "phase": "reduce", "segment": 0, "info": {"samples": 3}}
            cases = [({"attempt": 0}, np.zeros(3, np.float32), "attempt 1, received a frame of attempt 0"),
                     ({"segment": 2}, np.zeros(3, np.float32), "owns segment 0, received segment 2"),
                     ({}, np.zeros(2, np.float32), "expected 3 float32 values"),
                     ({"phase": "gather", "segment": 1}, np.zeros(3, np.float32), "from rank 2"),
                     ({"info": {"samples": -1}}, np.zeros(3, np.float32), "counts samples"),
                     ({"info": None}, np.zeros(3, np.float32), "counts samples")]
            for change, array, message in cases:
                with pytest.raises(protocol.RemoteError, match=message):
                    conn.request(ring.RING_SEGMENT, dict(base, **change), array)
            conn.request(ring.RING_SEGMENT, base, np.zeros(3, np.float32))
            with pytest.raises(protocol.RemoteError, match="a second copy"):
                conn.request(ring.RING_SEGMENT, base, np.zeros(3, np.float32))
            peer.mailbox.begin(5)
            with pytest.raises(protocol.RemoteError, match="is in round 5, received a frame of round 0"):
                conn.request(ring.RING_SEGMENT, dict(base, round=0, rank=2), np.zeros(3, np.float32))


def test_a_peer_that_dies_mid_ring_ends_the_round_naming_it_and_the_round():
    """Rank 2 sends its reduce-scatter segments of round 1, then dies before the all-gather:
    ranks 0 and 1 fail to send to it or time out waiting for it (which, depends on how far
    they got when it died), within the timeout, naming round 1. Rank 0 waits for rank 2 in
    the all-gather; rank 1, if it got its segments to rank 2 before it died, waits for rank
    0 to pass rank 2's on, so its error may name rank 0 (and says a rank before it may be
    the one that failed)."""
    n, size, token = 3, 30, protocol.new_token()
    peers = [ring.RingPeer(r, n, size, token, 1.0) for r in range(n)]
    for p in peers:
        p.connect([q.address for q in peers])
    errors = {}

    def rank(r):
        try:
            peers[r].allreduce(np.ones(size, np.float32), 0, {"samples": 1})
            if r == 2:
                peers[r].mailbox.begin(1)
                peers[r]._reduce_scatter(np.ones(size, np.float32), 1, {"samples": 1, "diverged": False})
                peers[r].close()
                return
            peers[r].allreduce(np.ones(size, np.float32), 1, {"samples": 1})
        except Exception as exc:  # noqa: BLE001 - the test reads them
            errors[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for p in peers:
        p.close()
    assert sorted(errors) == [0, 1], errors
    for r in (0, 1):
        assert isinstance(errors[r], (ConnectionError, TimeoutError)), errors[r]
        assert str(errors[r]).startswith("ring: rank") and "round 1" in str(errors[r]), errors[r]
        assert "rank 2" in str(errors[r]) or "a rank before it" in str(errors[r]), errors[r]
    assert "rank 2" in str(errors[0]), errors[0]


@pytest.mark.parametrize("security", ["plain", "encrypted"])
def test_the_mean_is_the_same_in_every_protection_mode(security):
    if security == "encrypted":
        pytest.importorskip("cryptography")
    rng = np.random.default_rng(7)
    vectors = [rng.standard_normal(101).astype(np.float32) for _ in range(3)]
    token = protocol.new_token()
    peers = [ring.RingPeer(r, 3, 101, token, 10.0, security=security) for r in range(3)]
    for p in peers:
        p.connect([q.address for q in peers])
    means = [None] * 3

    def rank(r):
        means[r] = peers[r].allreduce(vectors[r], 0, {"samples": r + 1})[0]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for p in peers:
        p.close()
    expected = reference(vectors, [1, 2, 3], [(0, 101, True)])
    assert all(m is not None and m.tobytes() == expected.tobytes() for m in means)


def test_a_peer_speaking_another_protection_mode_is_refused():
    token = protocol.new_token()
    with ring.RingPeer(0, 2, 4, token, 2.0, security="integrity") as strict, \
            ring.RingPeer(1, 2, 4, token, 2.0, security="plain") as lax:
        for p in (strict, lax):
            p.connect([strict.address, lax.address])
        with pytest.raises(AuthenticationError, match="rank 0 refused rank 1's connection in round 0"):
            lax.allreduce(np.ones(4, np.float32), 0, {"samples": 1})
        assert not strict.mailbox._frames


def compressed_reference(vectors, samples, ranges, codec):
    """The first round of a compressed ring, segment by segment: the owner adds its own part
    exactly and the others' decoded encodings in rank order (float64, weighted ranges times
    samples, one rounding), then every rank takes the decoding of the encoded mean."""
    n, size = len(vectors), vectors[0].size
    out = np.empty(size, np.float32)
    for j, (a, b) in enumerate(ring.segment_bounds(size, n)):
        parts = [x[a:b] if r == j else codec.decode(codec.encode(x[a:b].copy()), b - a)
                 for r, x in enumerate(vectors)]
        clipped = [(max(lo, a) - a, min(hi, b) - a, w) for lo, hi, w in ranges if max(lo, a) < min(hi, b)]
        mean = reference(parts, samples, clipped)
        out[a:b] = codec.decode(codec.encode(mean), b - a)
    return out


@pytest.mark.parametrize("name", ["fp16", "int8"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 7, 5001])
def test_a_compressed_ring_sums_decoded_segments_in_rank_order_and_every_rank_holds_the_same_bits(name, n, size):
    rng = np.random.default_rng(n * 100 + size)
    vectors = [(rng.standard_normal(size) * 10 ** rng.uniform(-3, 1, size)).astype(np.float32) for _ in range(n)]
    samples = [int(s) for s in rng.integers(1, 700, n)]
    ranges = [(0, size // 3, False), (size // 3, size, True)]
    codec = compression.get_codec(name)
    expected = compressed_reference(vectors, samples, ranges, codec)
    results = run_ring(vectors, samples, ranges, rounds=(0,), codec=codec)
    for means, _ in results:
        assert means[0].tobytes() == expected.tobytes()
    if n > 1 and size > n:      # rounding really happened: not the exact mean
        assert expected.tobytes() != reference(vectors, samples, ranges).tobytes()


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_error_feedback_delivers_over_rounds_what_rounding_held_back_and_a_reset_starts_afresh(name):
    """The same vectors each round: without feedback every round would round alike, so the
    average of the rounds' means would be as far from the exact mean as one round's; with it
    the rounds' errors cancel. After ``reset_residuals`` a round repeats the first's bits."""
    rng = np.random.default_rng(7)
    size, n, rounds = 3000, 3, 12
    vectors = [(rng.standard_normal(size) * 10 ** rng.uniform(-2, 0, size)).astype(np.float32) for _ in range(n)]
    samples = [3, 5, 8]
    codec = compression.get_codec(name)
    exact = reference(vectors, samples, [(0, size, True)]).astype(np.float64)
    results = run_ring(vectors, samples, rounds=tuple(range(rounds + 1)), codec=codec, reset=(rounds,))
    for means, _ in results:
        assert means[0].tobytes() == results[0][0][0].tobytes()
        first = np.abs(means[0] - exact).sum()
        average = np.abs(np.mean(np.array(means[:rounds], np.float64), axis=0) - exact).sum()
        assert first > 0 and average < first / 4, (first, average)
        assert means[rounds].tobytes() == means[0].tobytes()
        assert means[1].tobytes() != means[0].tobytes()
