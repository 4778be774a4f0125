"""An α–β cost model of one training round for the driver hub, the ring all-reduce and the
asynchronous parameter server, on one shared machine or on a cluster.

A round's time is ``fixed + compute + messages·α + bytes·β + vector passes·γ + codec work``:

- ``fixed``: what a round costs whatever the model's size (the coordinator's small frames, the
  tasks' bookkeeping);
- ``compute``: one worker's τ steps; on a shared machine N tasks on ``cores`` cores take
  ``max(1, N / cores)`` times as long;
- ``α``: latency of one message (a frame and its receipt); ``β``: seconds per byte of one
  transfer, both ends' copies and integrity tags included. On a shared machine every transfer
  competes for the same cores, so the bytes of all concurrent transfers are paid at the
  machine's aggregate rate (``Env.rate(k)``: bytes per second with k transfers at once); on a
  cluster each host has its own link and the driver's link carries all of the hub's bytes;
- ``γ``: one pass adding a float32 vector into a float64 sum (a push into the driver's sum, a
  contribution into a ring segment's); ``copy``: one pass that copies or scans a float32
  vector (loading pulled weights into the model, packing a push, the finiteness check).

Schemes (M values of float32 or of a codec's bytes, N workers):

- **hub**: each worker pulls and pushes the whole vector through the driver, ``2·N·V`` driver
  bytes (V: the vector's bytes on the wire); the driver adds the N pushes in partition order
  (N γ-passes) and takes the mean (one more), then loads it into its model and packs the next
  payload (2 copies); a worker loads the pull, checks and packs its push (3 copies).
- **ring**: reduce-scatter by direct send (each rank sends N−1 segments of M/N to their owners;
  each owner adds N contributions of its segment) then an all-gather of N−1 steps around the
  ring: ``2(N−1)`` messages and ``2·V·(N−1)/N`` bytes per worker, none through the driver; a
  rank adds M values (its segment's N contributions, one γ-pass in all), and checks, packs,
  copies the gathered segments and loads the mean (4 copies).
- **ps** (asynchronous parameter server): each worker pulls and pushes the vector per cycle;
  a round is the time for every worker to complete one cycle: a worker's own cycle, or the
  driver serving N pushes and pulls (bytes and one apply pass each), whichever is longer.

Compression (``ratio``: wire bytes per float32 byte; ``encode`` / ``decode``: seconds per
value, the sender's error feedback included) shrinks V and adds the codec's passes.
"""
from __future__ import annotations

from dataclasses import dataclass

FLOAT32 = 4


@dataclass(frozen=True)
class Codec:
    """A wire encoding: bytes per float32 byte and seconds per value to encode and decode."""
    name: str = "none"
    ratio: float = 1.0
    encode: float = 0.0
    decode: float = 0.0

    def bytes(self, values: float) -> float:
        return values * FLOAT32 * self.ratio


NONE = Codec()


@dataclass(frozen=True)
class Env:
    """Where the workers run. ``shared``: every process on one machine of ``cores`` cores (the
    tasks' compute and all transfers compete for them); otherwise one host per worker with its
    own link, and a driver with ``driver_cores``. ``rates``: aggregate bytes per second of k
    transfers at once between distinct pairs of processes (k = 1, 2, ...; the last holds for
    larger k); ``driver_rates`` / ``driver_out_rates``: the same for k transfers into / out of
    one process, the driver's pushes / pulls (on a cluster: its link, or its cores' hashing if
    slower); ``compute``: one worker's compute per round alone on its host."""
    alpha: float
    rates: tuple
    driver_rates: tuple
    driver_out_rates: tuple
    gamma: float
    copy: float
    compute: float
    fixed: float = 0.0
    shared: bool = False
    cores: int = 1
    driver_cores: int = 1

    def rate(self, k: int) -> float:
        return _at(self.rates, k)

    def driver_rate(self, k: int) -> float:
        return _at(self.driver_rates, k)

    def driver_out_rate(self, k: int) -> float:
        return _at(self.driver_out_rates, k)

    def compute_time(self, n: int) -> float:
        return self.compute * _contention(n, self)


def _at(rates: tuple, k: int) -> float:
    return rates[min(max(k, 1), len(rates)) - 1]


def _contention(n: int, env: Env) -> float:
    """How much longer work done by all N workers at once takes than by one."""
    return max(1.0, n / env.cores) if env.shared else 1.0


@dataclass(frozen=True)
class Round:
    """A predicted round: ``seconds`` and the terms it is made of, the driver's bytes and each
    worker's bytes sent."""
    seconds: float
    compute: float
    comm: float
    driver_bytes: float
    worker_bytes: float


def hub_bytes(n: int, values: float, codec: Codec = NONE) -> tuple[float, float]:
    """``(driver bytes, bytes each worker sends)`` of one hub round: a pull and a push each."""
    v = codec.bytes(values)
    return 2 * n * v, v


def ring_bytes(n: int, values: float, codec: Codec = NONE) -> tuple[float, float]:
    """``(driver bytes, bytes each worker sends)`` of one ring round: N−1 segments of M/N in
    the reduce-scatter and N−1 in the all-gather."""
    if n <= 1:
        return 0.0, 0.0
    return 0.0, 2 * codec.bytes(values / n) * (n - 1)


def _driver_cores(n: int, env: Env) -> int:
    """Cores the driver's connection threads spread per-push work over."""
    return max(1, min(n, env.cores if env.shared else env.driver_cores))


def hub(n: int, values: float, env: Env, codec: Codec = NONE) -> Round:
    driver, sent = hub_bytes(n, values, codec)
    compute = env.compute_time(n)
    # the N pulls run at once, then the N pushes: latency twice, every byte through the driver
    transfer = 2 * env.alpha + driver / 2 * (1 / env.driver_out_rate(n) + 1 / env.driver_rate(n))
    # driver: N adds into the float64 sum and the mean, its model and the next payload; a
    # worker: loads the pulled vector into its model, checks it is finite, packs its push
    passes = values * ((n + 1) * env.gamma + 2 * env.copy) + 3 * values * env.copy * _contention(n, env)
    # the driver encodes the payload once and decodes N pushes; a worker decodes and encodes one
    codec_work = values * (codec.encode + n * codec.decode / _driver_cores(n, env)) \
        + values * (codec.encode + codec.decode) * _contention(n, env)
    comm = transfer + passes + codec_work
    return Round(env.fixed + compute + comm, compute, comm, driver, sent)


def ring(n: int, values: float, env: Env, codec: Codec = NONE) -> Round:
    driver, sent = ring_bytes(n, values, codec)
    compute = env.compute_time(n)
    messages = 2 * max(n - 1, 0)
    if env.shared:       # all ranks' bytes compete for the machine's cores
        transfer = messages * env.alpha + n * sent / env.rate(n)
    else:
        transfer = messages * env.alpha + sent / env.rate(1)
    # a rank: N contributions of its segment (M values in all, and the mean), checking and
    # packing its vector, copying the gathered segments, loading the mean into its model
    passes = values * (env.gamma + 4 * env.copy) * _contention(n, env)
    segments = values * (n - 1) / max(n, 1)  # values a rank encodes and decodes in each phase
    codec_work = 2 * segments * (codec.encode + codec.decode) * _contention(n, env)
    comm = transfer + passes + codec_work
    return Round(env.fixed + compute + comm, compute, comm, driver, sent)


def ps(n: int, values: float, env: Env, codec: Codec = NONE) -> Round:
    driver, sent = hub_bytes(n, values, codec)
    compute = env.compute_time(n)
    v = codec.bytes(values)
    # the server: one add per push (under its lock), and a decode and an encode (a pull) per
    # worker in the connection threads
    per_worker = values * (env.gamma + (codec.decode + codec.encode) / _driver_cores(n, env))
    if env.shared:       # a worker's pull and push share the driver with the others'
        own_bytes = n * v * (1 / env.driver_out_rate(n) + 1 / env.driver_rate(n))
    else:
        own_bytes = 2 * v / env.rate(1)
    own = 2 * env.alpha + own_bytes + values * (codec.encode + codec.decode + 3 * env.copy) \
        * _contention(n, env) + per_worker
    served = n * (v * (1 / env.driver_out_rate(n) + 1 / env.driver_rate(n)) + per_worker)
    seconds = env.fixed + max(compute + own, served)
    return Round(seconds, compute, seconds - env.fixed - compute, driver, sent)


SCHEMES = {"hub": hub, "ring": ring, "ps": ps}


def speedup(scheme, n: int, values: float, env: Env, codec: Codec = NONE) -> float:
    """Samples per second of N workers over one worker training alone (no exchange)."""
    return n * env.compute / scheme(n, values, env, codec).seconds
