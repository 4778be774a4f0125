"""The terms of ``scale_model`` measured on this machine: α and β of sparkdl's own frames between
processes on loopback, the aggregate rate of k transfers at once (between distinct pairs of
processes, into one process as pushes into the driver, out of one as the driver's pulls),
γ (one pass over a vector), a copy, the codecs' cost per value, HMAC-SHA256's rate, and one
worker's compute per step of a dense model.

``Loopback`` keeps its client and server processes for the whole benchmark, so its terms can
be sampled again between real fits and see the same load as they do.
"""
from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import statistics
import threading
import time

import numpy as np

import scale_model as sm

SIZES = (4, 64 << 10, 1 << 20, 4 << 20, 16 << 20)
BIG = SIZES[-1]
PROCESSES = 4


class _Sink:
    """A FrameServer service that answers every frame with OK; arrays land in per-thread
    buffers kept from frame to frame (as the round exchange's pooled push buffers)."""
    max_data = 1 << 26

    def __init__(self):
        self._local = threading.local()

    def receive_buffer(self, op, meta, shape, dtype):
        pool = self._local.__dict__.setdefault("pool", {})
        key = (tuple(shape), np.dtype(dtype).str)
        if key not in pool:
            pool[key] = np.empty(shape, dtype)
        return pool[key]

    def handle(self, frame):
        """A push is answered with OK; a pull with ``meta["values"]`` float32 values."""
        from sparkdl.distributed.protocol import Frame, Op
        if frame.op == Op.PULL:
            values = int(frame.meta["values"])
            pool = self._local.__dict__.setdefault("payloads", {})
            if values not in pool:
                pool[values] = np.ones(values, np.float32)
            return Frame(Op.OK, {}, pool[values])
        return Frame(Op.OK, {})


def _serve(mode, token, pipe):
    from sparkdl.distributed.server import FrameServer
    server = FrameServer(_Sink(), token, timeout=600, security=mode, name=f"scale-{mode}")
    pipe.send(server.address)
    pipe.recv()
    server.close()


def _client(commands, results, token):
    """Runs ``(address, mode, size, count, pull)`` commands: count frames of size bytes, each
    pushed with its receipt or (``pull``) asked for and received; answers the seconds of each."""
    from sparkdl.distributed.protocol import Connection, Op
    conns = {}
    for address, mode, size, count, pull in iter(commands.get, None):
        conn = conns.get((address, mode))
        if conn is None:
            conn = conns[(address, mode)] = Connection(address, token, 600, security=mode)
            conn.request(Op.PUSH, {}, np.zeros(1 << 18, np.float32))
        array = np.ones(max(size // 4, 1), np.float32)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            if pull:
                conn.request(Op.PULL, {"values": array.size}, out=array)
            else:
                conn.request(Op.PUSH, {}, array)
            times.append(time.perf_counter() - start)
        results.put(times)
    for conn in conns.values():
        conn.close()


def fit_alpha_beta(sizes, seconds) -> tuple[float, float]:
    """``(α, β)`` of ``t = α + β·bytes`` by least squares on relative error (each point
    weighted by 1 / t, so the small messages decide α and the large ones β)."""
    x, t = np.asarray(sizes, float), np.asarray(seconds, float)
    a = np.stack([np.ones_like(x), x], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return float(alpha), float(beta)


class Loopback:
    """``PROCESSES`` client processes and, per mode, as many server processes (sparkdl's
    ``Connection`` and ``FrameServer``, spawned)."""

    def __init__(self, modes=("plain", "integrity")):
        from sparkdl.distributed.protocol import new_token
        ctx = multiprocessing.get_context("spawn")
        token = new_token()
        self.commands = [ctx.Queue() for _ in range(PROCESSES)]
        self.results = ctx.Queue()
        self.clients = [ctx.Process(target=_client, args=(q, self.results, token), daemon=True)
                        for q in self.commands]
        self.servers, self.addresses = [], {}
        for proc in self.clients:
            proc.start()
        for mode in modes:
            self.addresses[mode] = []
            for _ in range(PROCESSES):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(mode, token, there), daemon=True)
                proc.start()
                self.servers.append((proc, here))
                self.addresses[mode].append(here.recv())

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for proc, pipe in self.servers:
            pipe.send("stop")
            proc.join(30)
        for proc in self.clients:
            proc.join(30)

    def alpha_beta(self, mode: str, repeats: int) -> dict:
        """α, β and the median seconds of each size, one client and one server."""
        medians = []
        for size in SIZES:
            self.commands[0].put((self.addresses[mode][0], mode, size, repeats, False))
            medians.append(statistics.median(self.results.get(timeout=600)))
        alpha, beta = fit_alpha_beta(SIZES, medians)
        return {"alpha": alpha, "beta": beta, "medians": medians}

    def rate(self, mode: str, k: int, kind: str, count: int) -> float:
        """Bytes per second of k transfers at once of ``count`` frames of 16 MB each: clients
        pushing each into its own server process (``"pairs"``), all into one (``"in"``, the
        driver receiving pushes), or pulling all from one (``"out"``, the driver serving pulls)."""
        start = time.perf_counter()
        for i in range(k):
            address = self.addresses[mode][i if kind == "pairs" else 0]
            self.commands[i].put((address, mode, BIG, count, kind == "out"))
        for _ in range(k):
            self.results.get(timeout=600)
        return k * count * BIG / (time.perf_counter() - start)

    def sample(self, mode: str, quick: bool) -> dict:
        """One sample of α, β and the rates of k = 1..4 transfers: pairs, into and out of one
        process."""
        out = self.alpha_beta(mode, 3 if quick else 5)
        count = 2 if quick else 3
        for key, kind in (("rates", "pairs"), ("driver_rates", "in"), ("driver_out_rates", "out")):
            out[key] = tuple(self.rate(mode, k, kind, count) for k in range(1, PROCESSES + 1))
        return out


def median_terms(samples: list[dict]) -> dict:
    """Each term's median over samples (tuples element by element)."""
    out = {}
    for key, value in samples[0].items():
        if isinstance(value, (tuple, list)):
            out[key] = tuple(statistics.median(s[key][i] for s in samples) for i in range(len(value)))
        else:
            out[key] = statistics.median(s[key] for s in samples)
    return out


def _best(fn, n=3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gamma(values: int = 1 << 22) -> float:
    """Seconds per value of one pass: adding a float32 vector into a float64 sum (the ring's
    and the hub's weighted sum), over four contributions."""
    from sparkdl.distributed import ring
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(values, dtype=np.float32) for _ in range(4)]
    acc, chunk, out = np.empty(values), np.empty(1 << 20), np.empty(values, np.float32)
    return _best(lambda: ring.weighted_mean_into(out, [(x, 1) for x in xs], [(0, values, True)], acc,
                                                 chunk)) / (len(xs) * values)


def copy_pass(values: int = 1 << 22) -> float:
    """Seconds per value of copying a float32 vector into another (loading, packing)."""
    src, dst = np.ones(values, np.float32), np.empty(values, np.float32)
    return _best(lambda: np.copyto(dst, src), 5) / values


def codecs(values: int = 1 << 22) -> dict:
    """Each codec's wire ratio and seconds per value: error-feedback encode, decode."""
    from sparkdl.distributed import compression
    rng = np.random.default_rng(0)
    x, out = rng.standard_normal(values, dtype=np.float32), np.empty(values, np.float32)
    found = {}
    for name in ("fp16", "int8"):
        codec = compression.get_codec(name)
        feedback = compression.ErrorFeedback(codec, values)
        payload = feedback.encode(x)
        found[name] = sm.Codec(name, payload.nbytes / (4 * values),
                               _best(lambda f=feedback: f.encode(x)) / values,
                               _best(lambda c=codec, p=payload: c.decode(p, values, out=out)) / values)
    return found


def hmac_rate() -> float:
    data = memoryview(np.ones(1 << 22, np.float32)).cast("B")
    return len(data) / _best(lambda: hmac.new(b"k" * 32, data, hashlib.sha256).digest(), 5)


def make_model(width: int, hidden: int):
    import sparkdl
    from sparkdl import layers
    from sparkdl.models import Sequential
    sparkdl.set_random_seed(0)
    m = Sequential([layers.Input((width,)), layers.Dense(hidden, activation="relu"),
                    layers.Dense(10, activation="softmax")])
    m.compile("sgd", "sparse_categorical_crossentropy")
    return m


def compute_per_step(width: int, hidden: int, batch: int) -> float:
    """One worker's step of ``batch`` rows on one BLAS thread (a task with one CPU), median."""
    from sparkdl.engine import threads
    m = make_model(width, hidden)
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, width), dtype=np.float32), rng.integers(0, 10, batch)
    times = []
    threads.set_num_threads(1)
    try:
        for _ in range(13):
            start = time.perf_counter()
            m.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    finally:
        threads.set_num_threads(None)
    return statistics.median(times[3:])
