"""Row-sparse traffic against the whole vector, on Wide & Deep with a big id space.

``zoo.wide_and_deep(num_ids=2**22)`` over click data with 26 categorical fields and 13 dense
features; one worker (partition 0) trains the same rows with the same seeds in async
weights mode twice, in this process, against servers in threads: once against the
parameter server (whole-vector pulls and pushes, ``worker.run_async_epoch``), once against
K shards with row-sparse pulls and pushes (``sparse_worker.run_sparse_async_epoch``).
The row-sparse run is repeated with a compact worker (``sparse_worker.compact_model``: tables
of one stretch's rows). Prints the bytes of a push (measured, and the bound ``2 x touched
rows x dim x 4 B + dense``), of a pull, the worker's weights, samples/s of each path and
their ratio, and checks that all end with the same weights. No Spark.

    python benchmarks/row_sparse.py [--num-ids 4194304] [--rows 4096] [--batch 256] [--tau 1] [--shards 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import numpy as np

from sparkdl.data.synthetic import click_data
from sparkdl.distributed import protocol
from sparkdl.distributed.parameter_server import Client, ParameterServer
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.shard_client import ShardedClient
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shards import ShardServer
from sparkdl.distributed.sparse import ParamMap
from sparkdl.distributed.sparse_worker import compact_model, run_sparse_async_epoch
from sparkdl.distributed.worker import RoundSpec, model_vector, run_async_epoch
from sparkdl.engine import optimizers, zoo
from sparkdl.engine.random import set_random_seed

CARDINALITIES = tuple(int(c) for c in np.geomspace(4, 200_000, 26))


def whole_vector(model, xs, y, spec, token):
    ps = ParameterServer(model_vector(model), rows={0: len(y)}, timeout=600)
    ps.begin_epoch(spec.round)
    with FrameServer(ps, token, timeout=600) as server:
        client = Client(server.address, token, 600, spec.round, 0, 0, ps.vector.size)
        start = time.perf_counter()
        run_async_epoch(model, xs, y, spec, 0, client)
        seconds = time.perf_counter() - start
        client.close()
    return ps.snapshot(), seconds, ps.stats


def row_sparse(model, xs, y, spec, token, k, worker=None):
    """Against ``k`` shards of ``model``'s vector; ``worker``: the worker's model (default:
    ``model`` itself, whole tables)."""
    m = ParamMap.from_model(model)
    layout = ShardLayout(m, k)
    vector = model_vector(model)
    shards = [ShardServer(layout, s, layout.shard_values(vector, s), rows={0: len(y)}, timeout=600)
              for s in range(k)]
    del vector
    servers = []
    try:
        for s in shards:
            s.begin_epoch(spec.round)
            servers.append(FrameServer(s, token, timeout=600))
        client = ShardedClient(layout, [srv.address for srv in servers], token, 600, spec.round, 0, 0)
        start = time.perf_counter()
        run_sparse_async_epoch(model if worker is None else worker, xs, y, spec, 0, client, m)
        seconds = time.perf_counter() - start
        client.close()
    finally:
        for srv in servers:
            srv.close()
    return layout.assemble([s.snapshot() for s in shards]), seconds, client.stats, shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-ids", type=int, default=2**22)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tau", type=int, default=1)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    set_random_seed(0)
    model = zoo.wide_and_deep(num_ids=args.num_ids, num_fields=26, num_dense=13, embedding_dim=8)
    model.compile(optimizer=optimizers.SGD(0.05), loss="binary_crossentropy")
    data = click_data(args.rows, cardinalities=CARDINALITIES, crosses=(), num_dense=13, num_ids=args.num_ids)
    xs, y = model.check_data([data.ids, data.dense], data.label, "row_sparse")
    spec = RoundSpec(round=0, seed=0, batch_size=args.batch, frequency=args.tau, aggregate="weights", mode="async")
    m = ParamMap.from_model(model)
    token = protocol.new_token()
    print(f"sparkdl row-sparse benchmark: {platform.machine()}, {os.cpu_count()} cores, "
          f"wide_and_deep(num_ids={args.num_ids}), {m.size:,} values ({4 * m.size / 1e6:.0f} MB), "
          f"dense part {m.dense_length:,}; {args.rows} rows, batch {args.batch}, tau {args.tau}, "
          f"{args.shards} shards")

    sparse_final, sparse_s, stats, shards = row_sparse(copy.deepcopy(model), xs, y, spec, token, args.shards)
    pushes = stats["pushes"]
    touched = sum(s.stats["rows_pushed"] for s in shards)      # rows over both tables
    # both tables are read through the same ids, so each touched id is a row of each table
    ids_per_push = touched / len(m.tables) / pushes
    bound = 2 * ids_per_push * sum(t.dim for t in m.tables) * 4 + 4 * m.dense_length
    print(f"  row-sparse: {pushes} pushes, {ids_per_push:,.0f} ids touched per push (of {args.num_ids:,})")
    print(f"    bytes per push {stats['bytes_pushed'] / pushes:,.0f}  (bound 2 x touched x dim x 4 + dense: "
          f"{bound:,.0f}; ratio {stats['bytes_pushed'] / pushes / bound:.2f})")
    print(f"    bytes per pull {stats['bytes_pulled'] / pushes:,.0f}; whole vector {4 * m.size:,}  "
          f"(push {4 * m.size * pushes / max(stats['bytes_pushed'], 1):,.0f}x smaller)")
    compact = compact_model(model, m.capacity(args.tau, args.batch))
    compact_final, compact_s, _, _ = row_sparse(copy.deepcopy(model), xs, y, spec, token, args.shards, compact)
    print(f"    worker's weights: whole tables {model.flat_weights.nbytes:,} B, compact "
          f"{compact.flat_weights.nbytes:,} B (tables of {m.capacity(args.tau, args.batch)[0]:,} rows)")
    whole_final, whole_s, _ = whole_vector(copy.deepcopy(model), xs, y, spec, token)
    print(f"  samples/s: row-sparse {args.rows / sparse_s:,.0f} (compact worker {args.rows / compact_s:,.0f}), "
          f"whole vector {args.rows / whole_s:,.0f}; ratio {whole_s / sparse_s:.1f}x "
          f"({whole_s / compact_s:.1f}x)")
    print(f"  same final weights: {bool(np.array_equal(sparse_final, whole_final))} "
          f"(compact worker: {bool(np.array_equal(compact_final, whole_final))})")


if __name__ == "__main__":
    main()
