"""The engine and the distributed layer run without a JVM: importing them (and using the
wire protocol) must not import pyspark."""
import subprocess
import sys


def test_engine_and_distributed_do_not_import_pyspark():
    code = ("import sys, sparkdl, sparkdl.engine, sparkdl.distributed.parameter_server, "
            "sparkdl.distributed.exchange, sparkdl.distributed.worker, sparkdl.distributed.strategies, "
            "sparkdl.distributed.shards, sparkdl.distributed.shard_client, sparkdl.distributed.sparse_worker, "
            "sparkdl.distributed.shard_rounds, "
            "sparkdl.dashboard; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
