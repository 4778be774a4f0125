"""The wire codecs against a few lines of NumPy, and error feedback's conservation of sums."""
import numpy as np
import pytest

from sparkdl.distributed import compression
from sparkdl.distributed.compression import ErrorFeedback, Float16, Int8, get_codec


def _values(n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * scale).astype(np.float32)


def test_fp16_is_numpy_half_precision_with_clipping():
    x = _values(1000)
    x[:2] = [1e6, -1e6]                            # beyond half precision's range
    codec = Float16()
    payload = codec.encode(x)
    assert payload.dtype == np.uint8 and payload.size == 2 * x.size
    decoded = codec.decode(payload, x.size)
    expected = np.clip(x, -65504, 65504).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("n", [1, 2047, 2048, 2049, 10_000])
def test_int8_scale_per_chunk_matches_the_rule(n):
    x = _values(n, seed=n, scale=3.0)
    codec = Int8()
    payload = codec.encode(x)
    chunks = -(-n // compression.CHUNK)
    assert payload.size == n + 4 * chunks == codec.nbytes(n)
    decoded = codec.decode(payload, n)
    # The rule, written out chunk by chunk.
    expected = np.empty(n, np.float32)
    for c in range(chunks):
        part = x[c * compression.CHUNK:(c + 1) * compression.CHUNK]
        scale = np.float32(np.abs(part).max() / np.float32(127))
        q = np.rint(part / scale).astype(np.int8)
        expected[c * compression.CHUNK:(c + 1) * compression.CHUNK] = q.astype(np.float32) * scale
        assert np.abs(decoded[c * compression.CHUNK:(c + 1) * compression.CHUNK] - part).max() <= scale / 2 + 1e-6
    np.testing.assert_array_equal(decoded, expected)


def test_int8_tiny_values_do_not_overflow():
    x = np.full(3000, 1e-42, np.float32)         # subnormal: 1 / scale would overflow float32
    x[::2] = -3e-43
    with np.errstate(over="raise", invalid="raise"):
        decoded = Int8().decode(Int8().encode(x), x.size)
    assert np.isfinite(decoded).all() and np.abs(decoded - x).max() <= 1e-42


def test_int8_all_zero_chunk_and_sizes():
    x = np.zeros(5000, np.float32)
    x[4100:] = 1.5
    codec = Int8()
    decoded = codec.decode(codec.encode(x), x.size)
    np.testing.assert_array_equal(decoded, x)
    assert codec.nbytes(10_000_000) / (4 * 10_000_000) < 0.27
    assert Float16().nbytes(10) == 20


def test_encode_into_given_buffers_and_bad_payloads_are_refused():
    x = _values(3000)
    for codec in (Float16(), Int8()):
        out = np.empty(codec.nbytes(x.size), np.uint8)
        assert codec.encode(x, out=out) is out
        back = np.empty(x.size, np.float32)
        assert codec.decode(out, x.size, out=back) is back
        with pytest.raises(ValueError, match="expected .* bytes"):
            codec.decode(out[:-1], x.size)
        with pytest.raises(TypeError, match="1-D float32"):
            codec.encode(x.astype(np.float64))


def test_get_codec_names_the_choices():
    assert get_codec(None) is None
    assert isinstance(get_codec("fp16"), Float16) and isinstance(get_codec("int8"), Int8)
    with pytest.raises(ValueError, match="None, 'fp16' or 'int8', received 'int4'"):
        get_codec("int4")


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_error_feedback_delivers_the_sum_of_what_was_meant(name):
    """Sum of decoded sends = sum of inputs - final residual (up to float32 rounding), and
    with feedback the running sum tracks the true sum far better than without it."""
    codec, n, steps = get_codec(name), 4096, 50
    feedback = ErrorFeedback(codec, n)
    meant = np.zeros(n, np.float64)
    received = np.zeros(n, np.float64)
    plain = np.zeros(n, np.float64)
    for step in range(steps):
        x = _values(n, seed=step, scale=1e-3) + np.float32(1e-4)    # small, biased updates
        meant += x
        received += codec.decode(feedback.encode(x), n)
        plain += codec.decode(codec.encode(x), n)
    np.testing.assert_allclose(received + feedback.residual, meant, rtol=0, atol=1e-5)
    assert np.abs(received - meant).max() < np.abs(plain - meant).max()


def test_error_feedback_checks_its_input():
    feedback = ErrorFeedback(Int8(), 10)
    with pytest.raises(ValueError, match="expected 10 values, received 11"):
        feedback.encode(np.zeros(11, np.float32))


# ---- the parameter server's compressed pushes and pulls ------------------------------------------
SIZE = 5000
ROWS = {0: 100, 1: 100}


def _server(codec_name, vector):
    import contextlib

    from sparkdl.distributed import protocol
    from sparkdl.distributed.parameter_server import ParameterServer
    from sparkdl.distributed.server import FrameServer

    @contextlib.contextmanager
    def opened():
        token = protocol.new_token()
        ps = ParameterServer(vector, rows=ROWS, compression=codec_name)
        ps.begin_epoch(0)
        with FrameServer(ps, token, timeout=5.0) as server:
            yield ps, server, token
    return opened()


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_parameter_server_adds_the_decoded_pushes_and_sends_encoded_pulls(name):
    from sparkdl.distributed.parameter_server import Client

    start = _values(SIZE, seed=1)
    codec = get_codec(name)
    with _server(name, start) as (ps, server, token):
        client = Client(server.address, token, 5.0, 0, 0, 0, SIZE, compression=name)
        try:
            pulled = client.pull(0).copy()
            np.testing.assert_array_equal(pulled, codec.decode(codec.encode(start), SIZE))
            expected = start.astype(np.float64)
            mirror = ErrorFeedback(get_codec(name), SIZE)      # what the client's pushes carry
            for sequence in range(5):
                delta = _values(SIZE, seed=10 + sequence, scale=1e-2)
                assert client.push(sequence, 10, delta)
                expected += codec.decode(mirror.encode(delta), SIZE)
            np.testing.assert_allclose(ps.snapshot(), expected, rtol=0, atol=1e-5)
            np.testing.assert_array_equal(client.residual, mirror.residual)
            assert ps.stats["bytes_pushed"] == 5 * codec.nbytes(SIZE)
            assert ps.stats["bytes_pulled"] == codec.nbytes(SIZE)
        finally:
            client.close()


def test_a_compressed_server_refuses_float32_pushes_and_keeps_serving():
    from sparkdl.distributed.parameter_server import Client
    from sparkdl.errors import RemoteError

    start = _values(SIZE, seed=2)
    with _server("int8", start) as (ps, server, token):
        plain = Client(server.address, token, 5.0, 0, 0, 0, SIZE)
        good = Client(server.address, token, 5.0, 0, 1, 0, SIZE, compression="int8")
        try:
            # 4 bytes a value: above what an int8 push of this size may hold, refused unread
            with pytest.raises((RemoteError, ConnectionError), match=r"20000 bytes; at most 5012"):
                plain.push(0, 10, np.ones(SIZE, np.float32))
            # the right size, but the codec's bytes without its name
            bare = np.zeros(get_codec("int8").nbytes(SIZE), np.uint8)
            with pytest.raises(RemoteError, match="expected a push compressed with 'int8'"):
                plain.push(0, 10, bare)
            np.testing.assert_array_equal(ps.snapshot(), start)
            assert good.push(0, 10, np.zeros(SIZE, np.float32))
            np.testing.assert_array_equal(ps.snapshot(), start)
            assert ps.stats["pushes"] == 1
        finally:
            plain.close()
            good.close()


def test_worker_state_carries_the_residual():
    from sparkdl.distributed import worker
    from sparkdl.engine import optimizers, zoo

    model = zoo.mlp(input_dim=6, hidden=(4,), num_classes=3)
    model.compile(optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.optimizer.build(model.flat_weights.size)
    residual = _values(model.flat_weights.size + model.flat_state.size, seed=3)
    meta, vector = worker.worker_state(model, residual=residual)
    assert meta["residual"] == residual.size
    other = zoo.mlp(input_dim=6, hidden=(4,), num_classes=3)
    other.compile(optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    back = worker.set_worker_state(other, meta, vector)
    np.testing.assert_array_equal(back, residual)
    assert worker.set_worker_state(other, *worker.worker_state(model)) is None
