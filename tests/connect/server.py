"""A Spark Connect server started from the installed pyspark on loopback (``local[2]``), whose
Python workers run this interpreter and import this checkout: for the tests
(``conftest.connect_server``) and ``benchmarks/connect_fit.py``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


def missing() -> str | None:
    """Why no server can start here (pyspark without the server's jar, or the client's
    packages missing), or None."""
    try:
        import pyspark
    except ImportError:
        return "pyspark is not installed"
    if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):
        return f"pyspark {pyspark.__version__} ships no Spark Connect server jar (pyspark >= 4.0 does)"
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
        import grpc_status  # noqa: F401
        import zstandard  # noqa: F401
    except ImportError as exc:
        return f"the Spark Connect client's packages are missing ({exc}); pip install 'sparkdl[connect]'"
    return None


def _listening(port: int) -> bool:
    """Whether the server's gRPC port takes connections (it opens once the server is ready)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectServer:
    """``with ConnectServer(log) as url:`` a server for the block (``sc://127.0.0.1:PORT``);
    RuntimeError with the log's last lines when it does not come up."""

    def __init__(self, log: Path):
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        import pyspark
        home = Path(pyspark.__file__).parent
        port = _free_port()
        env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable,
                   PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        command = [str(home / "bin" / "spark-submit"),
                   "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
                   "--master", "local[2]", "--driver-memory", "2g",
                   "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                   "--conf", f"spark.connect.grpc.binding.port={port}",
                   "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.driver.host=127.0.0.1",
                   "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=4",
                   "--properties-file", str(ROOT / "spark-defaults.conf"), "spark-internal"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_bytes().decode(errors="replace").splitlines()[-15:]
                self.__exit__()
                raise RuntimeError("the Spark Connect server did not start: " + " | ".join(tail))
            time.sleep(0.2)
        return f"sc://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
