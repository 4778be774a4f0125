"""The parameter server of the asynchronous modes, without Spark: the server and its clients
run in threads of the test process. Covers exact accumulation under concurrency, the ssp
staleness bound and its timeout, at-most-once pushes across attempts and epochs, the
server-side optimizer (aggregate="gradients"), hogwild, authentication, malformed input,
cut-off pushes, and the checks made before anything changes (finite values, a partition the
fit trains, its newest attempt, counts its rows allow). The generic frame server is covered by test_protocol.py."""
import contextlib
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdl.distributed import protocol
from sparkdl.distributed.parameter_server import Client, ParameterServer
from sparkdl.distributed.protocol import Op
from sparkdl.distributed.server import FrameServer
from sparkdl.engine import optimizers

N = 8
INIT = np.arange(N, dtype=np.float32) - 3
ROWS = {p: 1000 for p in range(10)}        # the partitions a test's fit trains, and their rows


@contextlib.contextmanager
def ps_server(vector=INIT, *, epoch=0, server_timeout=5.0, security="integrity", **kwargs):
    """A ParameterServer for ``epoch`` behind a FrameServer: ``(ps, server, token)``."""
    token = protocol.new_token()
    ps = ParameterServer(vector, **dict({"rows": ROWS}, **kwargs))
    ps.begin_epoch(epoch)
    with FrameServer(ps, token, timeout=server_timeout, security=security) as server:
        yield ps, server, token


@contextlib.contextmanager
def clients(server, token, *specs, epoch=0, timeout=5.0, size=N):
    """One Client per ``(partition, attempt)`` in ``specs``, all closed on exit."""
    opened = [Client(server.address, token, timeout, epoch, p, a, size, server.security) for p, a in specs]
    try:
        yield opened if len(opened) > 1 else opened[0]
    finally:
        for c in opened:
            c.close()


def run_threads(*targets, timeout=10.0):
    """Run each target in a thread; fail if one hangs, re-raise the first error of any."""
    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:    # noqa: BLE001 - reported in the test's thread
                errors.append(exc)
        return run
    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    if errors:
        raise errors[0]


def wait_until(predicate, timeout=5.0, what="the condition"):
    """Poll a condition on the server's public state (used only to order threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def small_ints(rng, *shape):
    """Small-integer float32 values: their sums are exact in any order."""
    return rng.integers(-8, 9, size=shape).astype(np.float32)


# ---- async -----------------------------------------------------------------------------------------
def test_async_concurrent_pushes_sum_exactly():
    updates = small_ints(np.random.default_rng(1), 4, 50, N)
    acks = {p: [] for p in range(4)}
    with ps_server(mode="async") as (ps, server, token):
        def worker(p):
            with clients(server, token, (p, 0)) as c:
                c.start()
                for seq in range(50):
                    pulled = c.pull(seq)
                    assert pulled.shape == (N,) and np.all(pulled == np.round(pulled))
                    acks[p].append(c.push(seq, 1 + seq % 3, updates[p, seq]))
                c.done()
        run_threads(*(lambda p=p: worker(p) for p in range(4)))
        expected = INIT + updates.sum(axis=(0, 1))
        np.testing.assert_array_equal(ps.snapshot(), expected)
        assert all(acks[p] == [True] * 50 for p in range(4))
        assert ps.stats["pushes"] == 200 and ps.stats["duplicates"] == 0
        assert ps.stats["pulls"] == 200
        with clients(server, token, (9, 0)) as late:
            np.testing.assert_array_equal(late.pull(0), expected)


# ---- ssp -------------------------------------------------------------------------------------------
def test_ssp_concurrent_pushes_sum_exactly_within_the_staleness_bound():
    """Every pull returns while the puller is at most ``staleness`` pushes ahead of the
    slowest running client. Checked on the client side only: ``begun[q]`` (pushes q has
    started to send) is at least q's server clock, and a client leaving the run is dropped
    only once it has started its ``done()``, so the observed gap never exceeds the gap the
    server checked."""
    staleness, rounds, parts = 1, 30, 3
    updates = small_ints(np.random.default_rng(2), parts, rounds, N)
    lock = threading.Lock()
    begun = [0] * parts
    leaving = [False] * parts
    gaps = []
    started = threading.Barrier(parts, timeout=5)
    with ps_server(mode="ssp", staleness=staleness) as (ps, server, token):
        def worker(p):
            with clients(server, token, (p, 0)) as c:
                c.start()
                started.wait()                      # every clock is known before any pull
                for seq in range(rounds):
                    c.pull(seq)
                    with lock:
                        others = [begun[q] for q in range(parts) if q != p and not leaving[q]]
                        gaps.append(seq - min(others) if others else 0)
                    if p == parts - 1 and seq == 0:
                        # The slowest client holds back until a faster one is made to wait.
                        wait_until(lambda: ps.stats["waits"] >= 1, what="an ssp wait")
                    with lock:
                        begun[p] += 1
                    assert c.push(seq, 1, updates[p, seq])
                with lock:
                    leaving[p] = True
                c.done()
        run_threads(*(lambda p=p: worker(p) for p in range(parts)))
        assert len(gaps) == parts * rounds
        assert max(gaps) <= staleness, f"a pull ran {max(gaps)} pushes ahead of the slowest client"
        assert ps.stats["waits"] >= 1
        assert ps.stats["pushes"] == parts * rounds
        np.testing.assert_array_equal(ps.snapshot(), INIT + updates.sum(axis=(0, 1)))


def test_ssp_pull_blocks_until_the_slow_partition_pushes():
    u, v = np.full(N, 2, np.float32), np.full(N, 5, np.float32)
    with ps_server(mode="ssp", staleness=0) as (ps, server, token):
        with clients(server, token, (0, 0), (1, 0)) as (a, b):
            a.start()
            b.start()
            a.pull(0)
            assert a.push(0, 1, u)                      # a is at clock 1, b at 0
            b_pushing = threading.Event()
            seen = {}

            def fast():
                pulled = a.pull(1)                      # 1 - 0 > staleness 0: waits for b
                seen["b_pushing"] = b_pushing.is_set()
                seen["pulled"] = pulled.copy()
            thread = threading.Thread(target=fast, daemon=True)
            thread.start()
            wait_until(lambda: ps.stats["waits"] == 1, what="a's pull to wait")
            assert thread.is_alive()
            np.testing.assert_array_equal(b.pull(0), INIT + u)
            # Set before the push: the server releases a as soon as b's push is applied,
            # possibly before b's push() returns here.
            b_pushing.set()
            assert b.push(0, 1, v)
            thread.join(5)
            assert not thread.is_alive()
            assert seen["b_pushing"]
            np.testing.assert_array_equal(seen["pulled"], INIT + u + v)   # a saw b's push
            assert ps.stats["wait_seconds"] > 0


def test_ssp_wait_times_out_naming_the_slowest_partition_and_done_releases_it():
    u = np.ones(N, np.float32)
    with ps_server(mode="ssp", staleness=0, timeout=0.3) as (ps, server, token):
        with clients(server, token, (3, 0), (7, 0)) as (fast, slow):
            fast.start()
            slow.start()
            fast.pull(0)
            fast.push(0, 1, u)
            with pytest.raises(protocol.RemoteError,
                               match=r"partition 3 at clock 1 waited 0\.3 s for partition 7 "
                                     r"\(clock 0\) to come within staleness 0"):
                fast.pull(1)
            waits = ps.stats["waits"]
            slow.done()                                 # the slow partition leaves the run
            np.testing.assert_array_equal(fast.pull(1), INIT + u)   # same connection still works
            fast.push(1, 1, u)
            np.testing.assert_array_equal(fast.pull(2), INIT + 2 * u)
            assert ps.stats["waits"] == waits
        # begin_epoch forgets the clocks: a partition that never said done() holds nobody back.
        with clients(server, token, (7, 0)) as stuck:
            stuck.start()
        ps.begin_epoch(1)
        with clients(server, token, (3, 1), epoch=1) as fast:
            fast.start()
            fast.pull(0)
            fast.push(0, 1, u)
            np.testing.assert_array_equal(fast.pull(1), INIT + 3 * u)
            assert ps.stats["waits"] == waits


def test_ssp_retried_attempt_is_not_held_back_by_its_own_replayed_pushes():
    u = np.ones(N, np.float32)
    with ps_server(mode="ssp", staleness=0, timeout=0.2) as (ps, server, token):
        with clients(server, token, (0, 0)) as first:        # attempt 0 dies after one push
            first.start()
            first.pull(0)
            assert first.push(0, 1, u)
        with clients(server, token, (0, 1)) as retry:        # run_async_epoch, replayed
            retry.start()
            retry.pull(0)
            assert not retry.push(0, 1, u)
            np.testing.assert_array_equal(retry.pull(1), INIT + u)
            assert retry.push(1, 1, u)
            retry.done()
        np.testing.assert_array_equal(ps.snapshot(), INIT + 2 * u)


# ---- at most once, epochs, authentication ----------------------------------------------------------
def test_duplicates_are_applied_once_and_epochs_are_enforced():
    u = np.full(N, 2, np.float32)
    with ps_server(mode="async", epoch=3) as (ps, server, token):
        with clients(server, token, (1, 0), (1, 1), epoch=3) as (first, retry):
            assert first.push(0, 5, u) is True
            assert retry.push(0, 5, u) is False           # same (partition, sequence), other attempt
            assert retry.push(1, 5, u) is True            # a new sequence from the retry counts
            with pytest.raises(protocol.RemoteError, match="received attempt 0, which a retry replaced"):
                first.push(2, 5, u)                       # the replaced attempt is refused
            assert ps.stats["pushes"] == 2 and ps.stats["duplicates"] == 1
            np.testing.assert_array_equal(ps.snapshot(), INIT + 2 * u)
            a, b = first.pull(0), first.pull(1)
            assert np.shares_memory(a, b)                 # pull() reuses the client's buffer
            with clients(server, token, (1, 0), epoch=4) as ahead:
                with pytest.raises(protocol.RemoteError, match=r"epoch 4 is not running \(running: 3\)"):
                    ahead.push(0, 5, u)
                with pytest.raises(protocol.RemoteError, match="epoch 4 is not running"):
                    ahead.pull(0)
                with pytest.raises(protocol.RemoteError, match="epoch 4 is not running"):
                    ahead.start()
                np.testing.assert_array_equal(ps.snapshot(), INIT + 2 * u)
                ps.begin_epoch(4)
                assert ahead.push(0, 5, u) is True        # the tags were forgotten
                assert ahead.push(0, 5, u) is False
            with pytest.raises(protocol.RemoteError, match=r"epoch 3 is not running \(running: 4\)"):
                first.push(2, 5, u)
            assert ps.stats["pushes"] == 3 and ps.stats["duplicates"] == 2
            np.testing.assert_array_equal(ps.snapshot(), INIT + 3 * u)


def test_a_client_without_the_token_is_refused():
    with ps_server(mode="async") as (ps, server, token):
        with clients(server, protocol.new_token(), (0, 0)) as intruder:
            with pytest.raises(protocol.AuthenticationError, match="refused"):
                intruder.push(0, 1, np.ones(N, np.float32))
            with pytest.raises(protocol.AuthenticationError):
                intruder.pull(0)
        assert server.stats["refused"] == 2
        assert ps.stats["pushes"] == 0 and ps.stats["pulls"] == 0
        np.testing.assert_array_equal(ps.snapshot(), INIT)


# ---- every push and clock is checked before anything changes ----------------------------------------
def _request(server, token, op, meta, array=None):
    """One raw request (what a token holder can send), on its own connection."""
    with protocol.Connection(server.address, token, 5) as conn:
        return conn.request(op, dict({"epoch": 0}, **meta), array)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_push_is_refused_and_its_tag_stays_free(bad):
    u = np.full(N, 2, np.float32)
    poisoned = u.copy()
    poisoned[5] = bad
    with ps_server(mode="async", rows={0: 10}) as (ps, server, token):
        with clients(server, token, (0, 0)) as c:
            with pytest.raises(protocol.RemoteError, match=r"expected finite values in the push of "
                                                           r"partition 0, received 1 NaN or infinite of 8"):
                c.push(0, 4, poisoned)
            np.testing.assert_array_equal(c.pull(0), INIT)
            assert c.push(0, 4, u) is True               # the real push of (0, 0) is applied
        np.testing.assert_array_equal(ps.snapshot(), INIT + u)
        assert ps.stats["pushes"] == 1 and ps.stats["duplicates"] == 0


def test_pushes_and_clocks_of_partitions_the_fit_does_not_train_are_refused():
    """A phantom partition's CLOCK would hold every ssp pull back at its clock 0; it is refused,
    and the real partition's pulls do not wait."""
    u = np.ones(N, np.float32)
    with ps_server(mode="ssp", staleness=0, timeout=0.5, rows={0: 10, 3: 10}) as (ps, server, token):
        for op, meta in ((Op.CLOCK, {"event": "start", "attempt": 0}),
                         (Op.PUSH, {"attempt": 0, "sequence": 0, "samples": 1})):
            with pytest.raises(protocol.RemoteError, match=r"expected a partition this fit trains "
                                                           r"\(\[0, 3\]\), received partition 7"):
                _request(server, token, op, dict(meta, partition=7), u if op == Op.PUSH else None)
        with clients(server, token, (0, 0)) as c:
            c.start()
            np.testing.assert_array_equal(c.pull(0), INIT)
            assert c.push(0, 1, u)
            np.testing.assert_array_equal(c.pull(1), INIT + u)   # nobody at clock 0 holds it back
            c.done()
        assert ps.stats["waits"] == 0 and ps.stats["pushes"] == 1
        np.testing.assert_array_equal(ps.snapshot(), INIT + u)


@pytest.mark.parametrize("key, value, shown", [
    ("samples", 2**63 - 1, "a 19-digit int"), ("samples", 11, "11"), ("samples", 0, "0"),
    ("sequence", 10, "10"), ("sequence", -1, "-1"), ("sequence", 2**62, "a 19-digit int")])
def test_counts_beyond_what_the_partition_holds_are_refused_before_the_tag_is_taken(key, value, shown):
    """With the server's optimizer, samples=10**400 used to fail after its tag was taken, and
    the real push of that (partition, sequence) was then dropped as a duplicate."""
    init = np.zeros(4, np.float32)
    g = np.array([10, -10, 20, 1], np.float32)
    with ps_server(init, mode="async", optimizer=optimizers.SGD(0.5), rows={0: 10}) as (ps, server, token):
        meta = dict({"partition": 0, "attempt": 0, "sequence": 0, "samples": 5}, **{key: value})
        with pytest.raises(protocol.RemoteError, match=f"expected {key} between {int(key == 'samples')} "
                                                       f"and {10 - (key == 'sequence')} \\(partition 0 holds "
                                                       f"10 rows\\), received {shown}"):
            _request(server, token, Op.PUSH, meta, g)
        np.testing.assert_array_equal(ps.snapshot(), init)
        with clients(server, token, (0, 0), size=4) as c:
            assert c.push(0, 5, g) is True
        np.testing.assert_array_equal(ps.snapshot(), init - np.float32(0.5) * (g / np.float32(5)))


def test_requests_of_an_attempt_other_than_the_registered_one_are_refused():
    """The coordinator registers attempt 1 of partition 0 (a retry): the replaced attempt 0's
    pushes and clocks are refused, so is an attempt that never registered; attempt 1 replays
    the push attempt 0 made (dropped) and goes on."""
    u = np.full(N, 3, np.float32)
    with ps_server(mode="ssp", staleness=0, timeout=0.5, rows={0: 10, 1: 10}) as (ps, server, token):
        ps.register(0, 0)
        with clients(server, token, (0, 0), (0, 1), (0, 2)) as (old, retry, forged):
            old.start()
            assert old.push(0, 1, u) is True
            ps.register(0, 1)
            for call in (lambda: old.push(1, 1, u), old.done, old.start):
                with pytest.raises(protocol.RemoteError, match=r"expected attempt 1 of partition 0 "
                                                               r"\(its newest\), received attempt 0"):
                    call()
            with pytest.raises(protocol.RemoteError, match="received attempt 2, which never registered"):
                forged.push(1, 1, -u)
            retry.start()
            assert retry.push(0, 1, u) is False
            np.testing.assert_array_equal(retry.pull(1), INIT + u)
            assert retry.push(1, 1, u) is True
            retry.done()
        np.testing.assert_array_equal(ps.snapshot(), INIT + 2 * u)
        assert ps.stats["pushes"] == 2 and ps.stats["duplicates"] == 1


# ---- malformed input from an authenticated client --------------------------------------------------
GOOD_META = {"epoch": 0, "partition": 1, "attempt": 0, "sequence": 0, "samples": 1}
_ints = st.integers(-2**40, 2**40)
_not_ints = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=4), st.lists(_ints, max_size=2),
                      st.dictionaries(st.text(max_size=2), _ints, max_size=1))
_payload = st.builds(lambda v: np.array(v, np.float32),
                     st.lists(st.floats(-1e6, 1e6, width=32), min_size=N, max_size=N))


def _frame(meta, array=None, op=Op.PUSH):
    if array is not None:
        array = np.ascontiguousarray(array)
    return protocol.encode_header(op, meta, array) + (b"" if array is None else array.tobytes())


def _with(key, value):
    return dict(GOOD_META, **{key: value})


def _mutate(frame, edits):
    data = bytearray(frame)
    for position, byte in edits:
        data[position % len(data)] = byte
    return bytes(data)


# PUSH frames that look valid but are each refused (the connection stays) or break the protocol
# (the connection closes); none may be applied.
_refused_or_closing = st.one_of(
    # a float32 vector of the wrong size (larger ones exceed the server's max_data)
    st.builds(lambda meta, n, x: _frame(meta, np.full(n, x, np.float32)),
              st.just(GOOD_META), st.integers(0, 3 * N).filter(lambda n: n != N),
              st.floats(-1e3, 1e3, width=32)),
    # the right number of values in another shape or dtype (float64/int64 are oversized)
    st.builds(lambda p, shape: _frame(GOOD_META, p.reshape(shape)), _payload,
              st.sampled_from([(2, N // 2), (N, 1), (1, N)])),
    st.builds(lambda p, dtype: _frame(GOOD_META, p.astype(dtype)), _payload,
              st.sampled_from(["<f8", "<i4", "<i8", "u1"])),
    # missing keys, keys of the wrong type, samples < 1, another epoch, no array at all
    st.builds(lambda keys, p: _frame({k: v for k, v in GOOD_META.items() if k not in keys}, p),
              st.sets(st.sampled_from(sorted(GOOD_META)), min_size=1), _payload),
    st.builds(lambda key, value, p: _frame(_with(key, value), p),
              st.sampled_from(sorted(GOOD_META)), _not_ints, _payload),
    st.builds(lambda s, p: _frame(_with("samples", s), p), st.integers(-5, 0), _payload),
    st.builds(lambda e, p: _frame(_with("epoch", e), p), _ints.filter(lambda e: e != 0), _payload),
    st.builds(lambda meta: _frame(meta), st.just(GOOD_META)),
    # other ops with random metadata: served (PULL, CLOCK), refused, or closing (op < 16)
    st.builds(lambda op, meta, p: _frame(meta, p, op), st.integers(1, 40),
              st.dictionaries(st.sampled_from(["epoch", "partition", "clock", "event"]),
                              st.one_of(st.just(0), _not_ints, st.sampled_from(["start", "done"]))),
              st.one_of(st.none(), _payload)),
    # a frame whose epoch is a string, with up to 3 bytes anywhere (header included) changed:
    # no such edit can turn it into an applicable push
    st.builds(_mutate, st.builds(lambda p: _frame(_with("epoch", "not-an-epoch"), p), _payload),
              st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), min_size=1, max_size=3)),
)
# What may end the conversation (nothing can follow a cut-off frame without completing it).
_tail = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=64),
    # a valid push cut off anywhere: never complete, so never applied
    st.builds(lambda p, cut: _frame(GOOD_META, p)[:cut % len(_frame(GOOD_META, p))],
              _payload, st.integers(0, 10**4)),
    # random header fields (oversized lengths included) followed by random bytes
    st.builds(lambda op, code, ndim, meta_len, data_len, tail:
              protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, op, code, ndim, meta_len,
                                   data_len) + tail,
              st.integers(0, 255), st.integers(0, 7), st.integers(0, 10),
              st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
              st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1)), st.binary(max_size=80)),
)


@pytest.fixture(scope="module")
def shared_ps():
    """A server whose single receive buffer (max_inflight=1) must be returned after every
    request, and a well-behaved client pushing as partition 0. Its frames travel without tags
    ("plain"), so that a token holder's frames reach the content checks (the tags have their
    own tests, in test_integrity.py)."""
    with ps_server(mode="async", max_inflight=1, timeout=0.5, security="plain") as (ps, server, token):
        with clients(server, token, (0, 0)) as good:
            yield ps, server, token, good, {"sequence": 0, "expected": INIT.copy()}


@settings(max_examples=1000, deadline=None)
@given(frames=st.lists(_refused_or_closing, max_size=3), tail=_tail, step=st.integers(-4, 4))
def test_malformed_frames_affect_only_their_connection(shared_ps, frames, tail, step):
    ps, server, token, good, state = shared_ps
    garbage = b"".join(frames) + tail
    if garbage:
        with protocol.Connection(server.address, token, timeout=5, security="plain") as bad:
            try:
                bad.sock.sendall(garbage)
                bad.sock.shutdown(socket.SHUT_WR)
                while bad.sock.recv(65536):             # answered or closed, never a hang
                    pass
            except TimeoutError:
                raise
            except OSError:                             # reset: closed with our bytes unread
                pass
    update = np.full(N, step, np.float32)
    assert good.push(state["sequence"], 1, update) is True
    state["sequence"] += 1
    state["expected"] += update
    np.testing.assert_array_equal(good.pull(0), state["expected"])
    assert ps.stats["pushes"] == state["sequence"] and ps.stats["duplicates"] == 0
    np.testing.assert_array_equal(ps.snapshot(), state["expected"])


def test_a_push_cut_off_mid_data_applies_nothing_and_frees_its_buffer():
    u = np.full(N, 3, np.float32)
    with ps_server(mode="async", max_inflight=1, timeout=2.0) as (ps, server, token):
        for cut in (13, 1):                             # twice: the single buffer comes back each time
            conn = protocol.Connection(server.address, token, 5)
            conn.sock.sendall(_frame(dict(GOOD_META, partition=0), u)[:-cut])
            conn.close()
        with clients(server, token, (0, 1)) as c:
            assert c.push(0, 1, u) is True              # (0, 0) was not taken by the cut-off pushes
            assert c.push(1, 1, u) is True
        np.testing.assert_array_equal(ps.snapshot(), INIT + 2 * u)
        assert ps.stats["pushes"] == 2 and ps.stats["duplicates"] == 0


# ---- lifecycle -------------------------------------------------------------------------------------
def test_two_servers_one_after_the_other_on_the_same_port():
    u = np.ones(N, np.float32)
    token = protocol.new_token()
    first_ps = ParameterServer(INIT, mode="async", rows=ROWS)
    first = FrameServer(first_ps, token, timeout=5)
    port = first.address[1]
    c = Client(first.address, token, 5.0, 0, 0, 0, N)
    try:
        assert c.push(0, 1, u)
        np.testing.assert_array_equal(c.pull(1), INIT + u)
        first.close()                                   # closed with a client connected
        second_ps = ParameterServer(INIT * 2, mode="async", rows=ROWS)
        with FrameServer(second_ps, token, port=port, timeout=5) as second:
            assert second.address[1] == port
            assert c.push(0, 1, u) is True              # the client reconnects once, by itself
            np.testing.assert_array_equal(c.pull(1), INIT * 2 + u)
            with clients(second, token, (1, 0)) as other:
                np.testing.assert_array_equal(other.pull(0), INIT * 2 + u)
        np.testing.assert_array_equal(first_ps.snapshot(), INIT + u)
    finally:
        c.close()
        first.close()


# ---- aggregate="gradients": the server's optimizer -------------------------------------------------
def test_gradient_pushes_step_the_server_optimizer():
    init = np.array([1, -2, 3, 0.5, 10, 20], np.float32)
    g = np.array([3, -6, 1.5, 12, 0.25, -1], np.float32)
    sgd = optimizers.SGD(0.5)
    with ps_server(init, mode="async", optimizer=sgd, weights_size=4) as (ps, server, token):
        with clients(server, token, (0, 0), size=6) as c:
            sent = g.copy()
            assert c.push(0, 4, sent)
            np.testing.assert_array_equal(sent, g)     # the server scales its own copy
        expected = init.copy()
        expected[:4] = init[:4] - np.float32(0.5) * (g[:4] / np.float32(4))
        expected[4:] = init[4:] + g[4:]
        np.testing.assert_array_equal(ps.snapshot(), expected)
        assert sgd.iterations == 1


@pytest.mark.parametrize("mode", ["async", "hogwild"])
def test_deltas_are_divided_among_the_workers(mode):
    """With workers=N each delta moves the server by delta / N: N deltas from the same pulled
    weights add up to their mean, as sync averaging would."""
    d = np.array([4, -2, 1, 0, 6, 8, 2, -4], np.float32)
    e = np.array([2, 2, -1, 3, 0, 4, 6, 1], np.float32)
    with ps_server(mode=mode, workers=2) as (ps, server, token):
        with clients(server, token, (0, 0), (1, 0)) as (a, b):
            assert a.push(0, 10, d.copy()) and b.push(0, 10, e.copy())
        np.testing.assert_array_equal(ps.snapshot(), INIT + d / np.float32(2) + e / np.float32(2))


def test_gradient_pushes_divide_only_the_moving_statistics_among_the_workers():
    init = np.array([1, -2, 3, 0.5, 10, 20], np.float32)
    g = np.array([3, -6, 1.5, 12, 0.25, -1], np.float32)
    with ps_server(init, mode="async", optimizer=optimizers.SGD(0.5), weights_size=4,
                   workers=4) as (ps, server, token):
        with clients(server, token, (0, 0), size=6) as c:
            assert c.push(0, 4, g.copy())
    expected = init.copy()
    expected[:4] = init[:4] - np.float32(0.5) * (g[:4] / np.float32(4))     # the optimizer's step
    expected[4:] = init[4:] + g[4:] / np.float32(4)                        # a quarter of the delta
    np.testing.assert_array_equal(ps.snapshot(), expected)


def test_momentum_over_two_gradient_pushes_matches_a_local_optimizer():
    rng = np.random.default_rng(3)
    init = small_ints(rng, 6)
    pushes = [(small_ints(rng, 6), 2), (small_ints(rng, 6), 8)]
    with ps_server(init, mode="ssp", staleness=1, optimizer=optimizers.SGD(0.5, momentum=0.9),
                   weights_size=4) as (ps, server, token):
        with clients(server, token, (0, 0), size=6) as c:
            c.start()
            for seq, (g, n) in enumerate(pushes):
                c.pull(seq)
                assert c.push(seq, n, g)
            c.done()
    local = optimizers.SGD(0.5, momentum=0.9)
    weights = init[:4].copy()
    for g, n in pushes:
        local.apply(weights, g[:4] / np.float32(n))
    np.testing.assert_array_equal(ps.snapshot()[:4], weights)
    np.testing.assert_array_equal(ps.snapshot()[4:], init[4:] + pushes[0][0][4:] + pushes[1][0][4:])


def test_the_mean_gradient_is_the_correctly_rounded_quotient():
    init = np.zeros(4, np.float32)
    g = np.array([10, -10, 20, 1], np.float32)
    with ps_server(init, mode="async", optimizer=optimizers.SGD(0.5)) as (ps, server, token):
        with clients(server, token, (0, 0), size=4) as c:
            assert c.push(0, 3, g)
    np.testing.assert_array_equal(ps.snapshot(), init - np.float32(0.5) * (g / np.float32(3)))


# ---- hogwild and configuration ---------------------------------------------------------------------
def test_hogwild_acknowledges_every_concurrent_push():
    updates = small_ints(np.random.default_rng(4), 4, 25, N)
    acks = []
    with ps_server(mode="hogwild") as (ps, server, token):
        def worker(p):
            with clients(server, token, (p, 0)) as c:
                c.start()
                for seq in range(25):
                    assert c.pull(seq).shape == (N,)
                    acks.append(c.push(seq, 1, updates[p, seq]))
                c.done()
        run_threads(*(lambda p=p: worker(p) for p in range(4)))
        assert acks == [True] * 100             # updates may be lost by design: only acks count
        assert ps.stats["pushes"] == 100 and ps.stats["duplicates"] == 0
        assert np.all(np.isfinite(ps.snapshot()))


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "hogwild", "optimizer": optimizers.SGD(0.1)}, "hogwild"),
    ({"mode": "ssp"}, "staleness"),
    ({"mode": "ssp", "staleness": -1}, "staleness"),
    ({"mode": "ssp", "staleness": True}, "staleness"),
    ({"mode": "ssp", "staleness": 1.5}, "staleness"),
    ({"mode": "sync"}, "mode"),
    ({"workers": 0}, "workers >= 1"),
])
def test_invalid_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParameterServer(INIT, rows=ROWS, **kwargs)
