"""A sync round's gradient push streamed during backward (``sparkdl.distributed.push_stream``),
without Spark: frames sent piece by piece arrive as ordinary frames (plain and sealed), a
streamed layout carries the gradients last layer first, and the driver's sums of streamed
pushes are the same bits as those of pushes packed after the round, whatever order they
arrive in; a push that carries a non-finite value is refused whole."""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.distributed import exchange, protocol, worker
from sparkdl.distributed.protocol import Connection, Op, RemoteError
from sparkdl.distributed.push_stream import PushStream
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.session import Session, derive_keys
from sparkdl.errors import ProtocolError
from sparkdl.models import Input, Sequential

f32 = np.float32


# ---- frames sent piece by piece ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plain", "integrity"])
def test_a_frame_sent_in_pieces_arrives_as_one_frame(mode):
    keys = derive_keys(b"k" * 32, b"s" * 32, b"c" * 32, mode)
    a, b = socket.socketpair()
    with a, b:
        vector = np.arange(300_000, dtype=f32)         # over one sealing chunk
        pieces = [vector[250_000:], vector[:10], vector[10:250_000]]
        sender = threading.Thread(target=protocol.send_pieces, daemon=True,
                                  args=(a, Op.PUSH, {"round": 1}, np.dtype(f32), vector.size, iter(pieces),
                                        Session.client(keys, mode)))
        sender.start()
        frame = protocol.recv_frame(b, 1 << 30, session=Session.server(keys, mode))
        sender.join(10)
    assert frame.op == Op.PUSH and frame.meta == {"round": 1}
    np.testing.assert_array_equal(frame.array, np.concatenate(pieces))


def test_pieces_that_do_not_add_up_to_the_declared_size_are_an_error():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ProtocolError, match="given only 3"):
            protocol.send_pieces(a, Op.PUSH, {}, np.dtype(f32), 4, [np.zeros(3, f32)])
        with pytest.raises(ProtocolError, match="piece of 2"):
            protocol.send_pieces(a, Op.PUSH, {}, np.dtype(f32), 4, [np.zeros(3, f32), np.zeros(2, f32)])


# ---- the streamed layout ----------------------------------------------------------------------------
def model_with_state(seed=0):
    """Dense(5 -> 4), BatchNorm(4), Dense(4 -> 2): weights [0, 24), [24, 32), [32, 42)."""
    model = Sequential([Input((5,)), layers.Dense(4, activation="tanh"), layers.BatchNorm(),
                        layers.Dense(2)])
    model.compile(optimizers.Adam(), "mse")
    rng = np.random.default_rng(seed)
    model.set_flat_weights(rng.normal(size=model.flat_weights.size).astype(f32))
    return model


def test_a_streamed_layout_carries_the_gradients_last_layer_first_then_the_state():
    model = model_with_state()
    _, plain = exchange.round_layouts(model, "gradients")
    _, streamed = exchange.round_layouts(model, "gradients", streamed=True)
    assert streamed.wire == ((32, 42), (24, 32), (0, 24), (42, 50))
    assert streamed.names == plain.names and streamed.sizes == plain.sizes
    parts = {"gradients": np.arange(42, dtype=f32), "state": np.arange(100, 108, dtype=f32)}
    packed = streamed.pack(parts)
    assert packed[:10].tolist() == list(range(32, 42)) and packed[42:].tolist() == list(range(100, 108))
    _, averaged = exchange.round_layouts(model, "weights", streamed=True)
    assert averaged.wire == ()                  # only gradient sums are streamed


# ---- the driver's sums ---------------------------------------------------------------------------------
def data(partition, n=13):
    rng = np.random.default_rng(100 + partition)
    return [rng.normal(size=(n, 5)).astype(f32)], rng.normal(size=(n, 2)).astype(f32)


def spec():
    return worker.RoundSpec(round=0, seed=4, batch_size=4, frequency="epoch", aggregate="gradients")


def pushed_sums(streamed: bool, order=(2, 0, 1)):
    """Each partition's round (4 batches of gradients at the same weights) pushed to a driver's
    exchange over a real connection, in ``order``; the float64 sums the driver holds."""
    start = model_with_state()
    _, layout = exchange.round_layouts(start, "gradients", streamed=streamed)
    rounds = exchange.RoundExchange(layout, timeout=5)
    token = protocol.new_token()
    samples = {p: 13 for p in range(3)}
    with FrameServer(rounds, token, timeout=5) as server:
        rounds.open_round(0, np.zeros(1, f32), {}, partitions=samples)
        for p in order:
            model = model_with_state()
            xs, y = data(p)
            meta = {"round": 0, "partition": p, "attempt": 0, "samples": 13}
            with Connection(server.address, token, 5.0) as conn:
                if streamed:
                    stream = PushStream(conn, meta, layout, {"gradients": np.empty(42, f32)})
                    result = worker.run_round(model, xs, y, spec(), p, start.get_flat_weights(), None, {}, 0,
                                              views=True, gradients=stream.parts["gradients"],
                                              on_ready=stream.ready)
                    assert stream.started                 # the push began during backward
                    stream.finish({"state": model.flat_state})
                    reply = conn.receive()
                else:
                    result = worker.run_round(model, xs, y, spec(), p, start.get_flat_weights(), None, {}, 0)
                    reply = conn.request(Op.PUSH, meta, layout.pack({"gradients": result.vector,
                                                                     "state": result.state}))
            assert reply.meta["applied"]
        total, received = rounds.close_round()
    assert received == samples
    return total.copy()


def test_streamed_gradient_pushes_give_the_driver_the_same_sums_bit_for_bit():
    plain = pushed_sums(streamed=False)
    np.testing.assert_array_equal(pushed_sums(streamed=True), plain)
    np.testing.assert_array_equal(pushed_sums(streamed=True, order=(0, 1, 2)), plain)
    assert np.all(plain[:42] != 0)


def test_a_streamed_push_with_a_non_finite_value_is_refused_whole():
    model = model_with_state()
    _, layout = exchange.round_layouts(model, "gradients", streamed=True)
    rounds = exchange.RoundExchange(layout, timeout=5)
    token = protocol.new_token()
    with FrameServer(rounds, token, timeout=5) as server:
        rounds.open_round(0, np.zeros(1, f32), {}, partitions={0: 13})
        with Connection(server.address, token, 5.0) as conn:
            stream = PushStream(conn, {"round": 0, "partition": 0, "attempt": 0, "samples": 13}, layout,
                                {"gradients": np.ones(42, f32)})
            stream.ready(32, 42)
            stream.parts["gradients"][0] = np.nan
            stream.finish({"state": np.zeros(8, f32)})
            with pytest.raises(RemoteError, match="finite|NaN"):
                conn.receive()
        _, received = rounds.close_round()
    assert received == {}
