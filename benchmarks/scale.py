"""A scale model you can check: this machine's α, β and compute, the cost model of
``benchmarks/scale_model.py`` against real sync and asynchronous rounds with 2, 3 and 4
workers, then the model's round time, driver bytes and speedup for N = 2 … 256 workers on a
cluster.

(a) Terms measured here (``scale_terms``): α and β of one transfer between two processes on
    loopback with sparkdl's own ``Connection`` and ``FrameServer`` (a frame and its receipt,
    4 B to 16 MB, least squares on the medians, relative error), in ``integrity`` mode (the
    default) and ``plain``; the aggregate rate of k = 1..4 transfers of 16 MB at once, between
    distinct pairs of processes and into one process; γ, one pass adding a float32 vector into
    a float64 sum; a float32 copy; HMAC-SHA256; the codecs' error-feedback encode and decode;
    a Spark barrier job's launch; one worker's step on one BLAS thread. The integrity terms
    are sampled again after each N's fits in (b), and each N is predicted with the samples
    taken just before and after its fits (the machine is shared; its load moves).
(b) Real runs: ``SparkModel.fit`` on ``local[4]`` (one barrier job per fit, a Python worker per
    task), a dense 1000-2000-10 model (2.0 M parameters, plain SGD: the vector is the
    weights), frequency "batch" (one step of ``--batch`` rows per worker and round), N = 2, 3
    and 4: the hub (``transport="socket"``), the ring (``transport="allreduce"``) and the
    asynchronous parameter server (``mode="async"``, seconds per push cycle), in turn. Round
    times are the median of the ordinary rounds (a fit's first round and each epoch's last
    carry start-up and the driver's copy of the state). The round's fixed cost is measured
    per N with a 1k-parameter model on the hub. Printed: prediction, measurement, their
    ratio; a case more than 30% off is flagged.
(c) The model on a cluster, with the assumptions printed above the table (``--link``,
    ``--alpha``, ``--cores``, ``--cluster-batch``, ``--cluster-steps``).

    python benchmarks/scale.py [--quick] [--parts b,c] [--link 10] [--alpha 50]

``--quick`` (N = 2 and 4, one fit per case, no parameter server) runs in under two minutes and
is a smoke test; the full run takes 4-5 minutes.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale_model as sm  # noqa: E402  # the cost model, beside this script
import scale_terms as st  # noqa: E402  # the terms measured here


# ---- (b) real rounds on local[4] ---------------------------------------------------------------
def session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkdl.spark import get_session
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    spark = get_session("local[4]", app_name="sparkdl-bench-scale",
                        conf={"spark.ui.enabled": "false", "spark.executorEnv.PYTHONPATH": path})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def barrier_launch(spark, n: int, repeats: int) -> float:
    """Median seconds of a barrier job of n tasks that do nothing (after one to warm up)."""
    sc = spark.sparkContext
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        sc.parallelize(range(n), n).barrier().mapPartitions(lambda it: [sum(1 for _ in it)]).collect()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def ordinary(rounds, epochs):
    """The rounds other than a fit's first and each epoch's last."""
    per_epoch = len(rounds) // epochs
    return [r for i, r in enumerate(rounds) if i and (i + 1) % per_epoch]


def sync_fit(df, n, transport, width, hidden, batch, epochs):
    from sparkdl.spark import SparkModel
    m = st.make_model(width, hidden)
    history = SparkModel(m, frequency="batch", num_workers=n, transport=transport).fit(
        df, epochs=epochs, batch_size=batch, verbose=0)
    return ordinary(history.rounds, epochs), m.count_params()


def ps_fit(df, n, width, hidden, batch, epochs):
    """Seconds per push cycle of each worker (epoch seconds over its pushes), epochs after the first."""
    from sparkdl.spark import SparkModel
    m = st.make_model(width, hidden)
    history = SparkModel(m, mode="async", frequency="batch", num_workers=n).fit(
        df, epochs=epochs, batch_size=batch, verbose=0)
    return [r["seconds"] / (r["pushes"] / n) for r in history.rounds[1:]]


def frame(spark, n, rows, width):
    from sparkdl.spark import from_arrays
    rng = np.random.default_rng(n)
    df = from_arrays(spark, rng.random((n * rows, width), dtype=np.float32), rng.integers(0, 10, n * rows),
                     num_partitions=n).cache()
    df.count()
    return df


WIDTH, HIDDEN = 1000, 2000          # the model of the real runs: 2,022,010 parameters
TINY = (100, 10)                     # 1,120 parameters: the round's fixed cost


def local_env(terms, n, fixed=0.0, compute=None) -> sm.Env:
    """This machine: every process on its cores, the integrity terms measured here."""
    return sm.Env(alpha=terms["alpha"], rates=terms["rates"], driver_rates=terms["driver_rates"],
                  driver_out_rates=terms["driver_out_rates"],
                  gamma=terms["gamma"], copy=terms["copy"],
                  compute=terms["step"] if compute is None else compute,
                  fixed=fixed, shared=True, cores=os.cpu_count() or 1)


def sample_terms(loop, quick, batch) -> dict:
    out = loop.sample("integrity", quick)
    out.update(gamma=st.gamma(), copy=st.copy_pass(), hmac_rate=st.hmac_rate(),
               step=st.compute_per_step(WIDTH, HIDDEN, batch))
    return out


def real_runs(spark, loop, samples, args) -> dict:
    """Measured rounds of every case ``(n, scheme)``, with a sample of the terms taken after
    each N's fits (appended to ``samples``); ``measured[(n, "terms")]`` lists the samples taken
    just before and just after that N's fits, which saw the machine's load as they did."""
    batch = args.batch
    workers = (2, 4) if args.quick else (2, 3, 4)
    per_epoch, epochs, repeats = (6, 2, 1) if args.quick else (8, 2, 2)
    frames = {n: frame(spark, n, batch * per_epoch, WIDTH) for n in workers}
    tiny = {n: frame(spark, n, batch * per_epoch, TINY[0]) for n in workers}
    sync_fit(frames[max(workers)], max(workers), "socket", WIDTH, HIDDEN, batch, 1)     # warm-up
    measured: dict = {"setup": (per_epoch, epochs, repeats)}
    for _ in range(repeats):
        for n in workers:
            measured.setdefault((n, "terms"), set()).add(len(samples) - 1)
            rounds, _ = sync_fit(tiny[n], n, "socket", *TINY, batch, epochs)
            measured.setdefault((n, "tiny"), []).extend(r["seconds"] - r["compute_seconds"] for r in rounds)
            for name, transport in (("hub", "socket"), ("ring", "allreduce")):
                rounds, measured["params"] = sync_fit(frames[n], n, transport, WIDTH, HIDDEN, batch, epochs)
                measured.setdefault((n, name), []).extend(r["seconds"] for r in rounds)
                measured.setdefault((n, name, "compute"), []).extend(r["compute_seconds"] for r in rounds)
            if not args.quick:
                measured.setdefault((n, "ps"), []).extend(ps_fit(frames[n], n, WIDTH, HIDDEN, batch, 1 + epochs))
            samples.append(sample_terms(loop, args.quick, batch))
            measured[(n, "terms")].add(len(samples) - 1)
    measured["workers"] = workers
    return measured


def compare(measured, samples, args) -> tuple[list, dict]:
    """Prints model against measurement for every case, each N with the median of the terms
    sampled around its fits; returns the rows and fixed(N)."""
    per_epoch, epochs, repeats = measured["setup"]
    params = measured["params"]
    tiny_params = st.make_model(*TINY).count_params()
    print(f"(b) real rounds: SparkModel.fit on local[4] (one barrier job per fit; each task a Python "
          f"worker), frequency 'batch' ({args.batch} rows a step), {params:,} parameters "
          f"({params * 4 / 1e6:.1f} MB), 'integrity' frames, {per_epoch} rounds an epoch x {epochs} epochs "
          f"x {repeats} fits per case, cases alternating; median of the ordinary rounds (ps: seconds "
          f"per push cycle of a worker, epochs after the first)")
    print(f"    fixed(N): median overhead (round minus compute) of a {tiny_params:,}-parameter hub fit, "
          f"less the model's hub terms at that size; compute: one worker alone, one BLAS thread, "
          f"times max(1, N / {os.cpu_count()} cores) (the measured compute, "
          f"the slowest task's from the history, also holds loading the pulled weights and a "
          f"finiteness check, and whatever other processes took of the cores meanwhile)")
    print("     N  scheme  fixed(N)   compute: model / measured      round: model   measured   "
          "model / measured")
    rows, fixed_by_n = [], {}
    for n in measured["workers"]:
        terms = st.median_terms([samples[i] for i in sorted(measured[(n, "terms")])])
        tiny_over = statistics.median(measured[(n, "tiny")])
        bare = local_env(terms, n, compute=0.0)
        fixed = fixed_by_n[n] = max(0.0, tiny_over - sm.hub(n, tiny_params, bare).comm)
        env = local_env(terms, n, fixed)
        for name in ("hub", "ring", "ps"):
            if (n, name) not in measured:
                continue
            predicted = sm.SCHEMES[name](n, params, env)
            real = statistics.median(measured[(n, name)])
            ratio = predicted.seconds / real
            seen = measured.get((n, name, "compute"))
            seen_text = f"{statistics.median(seen) * 1e3:7.1f} ms" if seen else "  (async)"
            flag = "" if abs(ratio - 1) <= 0.30 else "   <-- more than 30% off"
            print(f"    {n:2d}  {name:<6} {fixed * 1e3:6.1f} ms   {predicted.compute * 1e3:7.1f} ms / {seen_text}"
                  f"       {predicted.seconds * 1e3:8.1f} ms {real * 1e3:8.1f} ms   {ratio:8.2f}{flag}")
            rows.append((n, name, predicted.seconds, real, ratio))
    worst = max(rows, key=lambda r: abs(r[4] - 1))
    print(f"    within 30%: {sum(abs(r[4] - 1) <= 0.30 for r in rows)} of {len(rows)} cases; largest gap "
          f"{abs(worst[4] - 1) * 100:.0f}% ({worst[1]}, N = {worst[0]})")
    return rows, fixed_by_n


# ---- (c) extrapolation to a cluster ------------------------------------------------------------
def cluster_env(terms, per_value_sample, params, link, alpha, cores, rows, fixed) -> sm.Env:
    """One worker per host: a worker's send is limited by the slower of its link and its HMAC
    (integrity tags, one core); the driver's by its link or its cores' hashing."""
    return sm.Env(alpha=alpha, rates=(min(link, terms["hmac_rate"]),),
                  driver_rates=(min(link, terms["hmac_rate"] * cores),),
                  driver_out_rates=(min(link, terms["hmac_rate"] * cores),), gamma=terms["gamma"],
                  copy=terms["copy"],
                  fixed=fixed, compute=per_value_sample * params * rows / cores, shared=False,
                  driver_cores=cores)


def extrapolate(terms, per_value_sample, fixed, args) -> None:
    link, alpha, cores, batch = args.link * 1e9 / 8, args.alpha * 1e-6, args.cores, args.cluster_batch
    steps = args.cluster_steps
    codecs = [sm.NONE, terms["codecs"]["fp16"], terms["codecs"]["int8"]]
    workers = [2 ** k for k in range(1, 9)]
    print(f"(c) the model on a cluster, assumed: one worker per host, {args.link:g} Gb/s links "
          f"({link / 1e9:.2f} GB/s) for every worker and for the driver, α = {args.alpha:g} µs per "
          f"message, {cores} cores per executor and on the driver (compute scales ideally over them; "
          f"a worker's codec passes run on one core, the driver's per-push ones on its cores)")
    print(f"    measured here and carried over: compute {per_value_sample * 1e9:.3f} ns per parameter and "
          f"sample on one core (the dense model of (b)), {steps} steps of {batch} rows per worker and "
          f"round (frequency {steps}); γ {terms['gamma'] * 1e9:.2f} and copy {terms['copy'] * 1e9:.2f} ns per "
          f"value and pass; HMAC-SHA256 "
          f"{terms['hmac_rate'] / 1e9:.2f} GB/s per core (integrity tags on, a worker's send is limited "
          f"by the slower of link and hash); fixed cost {fixed * 1e3:.2f} ms per round; codecs (error "
          f"feedback) " + ", ".join(f"{c.name} {c.ratio:.3f}x bytes, encode {c.encode * 1e9:.2f} / decode "
                                    f"{c.decode * 1e9:.2f} ns per value" for c in codecs[1:]))
    print("    compressed columns: every vector of the scheme encoded (hub pulls and pushes, ring segments, "
          "server pushes and pulls). speedup: samples/s of N workers over one worker training "
          "alone (no exchange); ps: every worker's push cycle, asynchronous")
    head = "".join(f"{s + ' ' + c.name:>11}" for s in ("hub", "ring", "ps") for c in codecs)
    for params in (1_000_000, 10_000_000, 100_000_000):
        env = cluster_env(terms, per_value_sample, params, link, alpha, cores, batch * steps, fixed)
        print(f"  {params // 1_000_000}M parameters ({params * 4 / 1e6:.0f} MB), compute per round "
              f"{env.compute * 1e3:.2f} ms")
        print("    round ms" + head + "   driver MB per round, hub and ps: none, fp16, int8 (ring: 0)")
        for n in workers:
            cells = [sm.SCHEMES[s](n, params, env, c) for s in ("hub", "ring", "ps") for c in codecs]
            driver = [sm.hub_bytes(n, params, c)[0] / 1e6 for c in codecs]
            print(f"    {n:4d}" + "".join(f"{r.seconds * 1e3:11.1f}" for r in cells) +
                  "   " + " ".join(f"{d:9.0f}" for d in driver))
        print("     speedup" + head)
        for n in workers:
            print(f"    {n:4d}" + "".join(f"{sm.speedup(sm.SCHEMES[s], n, params, env, c):11.1f}"
                                    for s in ("hub", "ring", "ps") for c in codecs))
        beats = [n for n in workers if sm.ring(n, params, env).seconds < sm.hub(n, params, env).seconds]
        print(f"    ring faster than hub (float32) from N = {beats[0] if beats else 'never'}; "
              f"ring bytes per worker {sm.ring_bytes(256, params)[1] / 1e6:.0f} MB at N = 256 "
              f"(2·M·(N−1)/N), hub driver {sm.hub_bytes(256, params)[0] / 1e9:.0f} GB")


def print_terms(plain, terms, codecs, launch, count) -> None:
    print(f"(a) terms measured on this machine (integrity: the median of {count} samples" +
          (", taken between the fits; (b) predicts each N with the samples taken just before and after "
           "its fits)" if count > 1 else ")"))
    for mode, t in (("plain", plain), ("integrity", terms)):
        print(f"    loopback, {mode:<9}: α = {t['alpha'] * 1e6:5.0f} µs, β = {t['beta'] * 1e9:.3f} ns/B "
              f"({1 / t['beta'] / 1e9:.2f} GB/s); frame + receipt, median: " +
              ", ".join(f"{s} B {m * 1e3:.2f} ms" for s, m in zip(st.SIZES, t["medians"])))
        print("      k = 1..4 transfers of 16 MB at once, aggregate GB/s: between pairs " +
              " ".join(f"{r / 1e9:.2f}" for r in t["rates"]) + "; into one process " +
              " ".join(f"{r / 1e9:.2f}" for r in t["driver_rates"]) + "; out of one process " +
              " ".join(f"{r / 1e9:.2f}" for r in t["driver_out_rates"]))
    print(f"    γ, one pass adding float32 into a float64 sum: {terms['gamma'] * 1e9:.2f} ns per value; "
          f"a float32 copy {terms['copy'] * 1e9:.2f} ns per value; "
          f"HMAC-SHA256 {terms['hmac_rate'] / 1e9:.2f} GB/s on one core")
    for c in codecs.values():
        print(f"    {c.name}: {c.ratio:.3f}x the bytes; error-feedback encode {c.encode * 1e9:.2f} ns, "
              f"decode {c.decode * 1e9:.2f} ns per value")
    if launch:
        print("    a barrier job of N tasks that do nothing (once per fit), median: " +
              ", ".join(f"N = {n}: {s * 1e3:.0f} ms" for n, s in launch.items()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="N = 2 and 4, one fit per case, no ps")
    parser.add_argument("--parts", default="b,c", help="b: the real runs; c: the cluster table")
    parser.add_argument("--batch", type=int, default=16, help="rows per step in the real runs of (b)")
    parser.add_argument("--link", type=float, default=10.0, help="Gb/s of every link in (c)")
    parser.add_argument("--alpha", type=float, default=50.0, help="µs per message in (c)")
    parser.add_argument("--cores", type=int, default=8, help="cores per executor and driver in (c)")
    parser.add_argument("--cluster-batch", type=int, default=128, help="rows per worker step in (c)")
    parser.add_argument("--cluster-steps", type=int, default=8, help="steps per worker and round in (c)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    print(f"# scale: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
          flush=True)
    loop = st.Loopback()
    try:
        plain = loop.sample("plain", args.quick)
        codecs = st.codecs()
        samples = [sample_terms(loop, args.quick, args.batch)]
        launch, measured = {}, None
        if "b" in parts:
            spark = session()
            launch = {n: barrier_launch(spark, n, 3 if args.quick else 5) for n in (2, 4)}
            measured = real_runs(spark, loop, samples, args)
            spark.stop()
    finally:
        loop.close()
    terms = st.median_terms(samples)
    print_terms(plain, terms, codecs, launch, len(samples))
    fixed = 1e-3
    if measured is not None:
        _, fixed_by_n = compare(measured, samples, args)
        fixed = fixed_by_n[2]
    if "c" in parts:
        params = st.make_model(WIDTH, HIDDEN).count_params()
        extrapolate(dict(terms, codecs=codecs), terms["step"] / (args.batch * params), fixed, args)
    print(f"# {time.perf_counter() - started:.0f} s; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
