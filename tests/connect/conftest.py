"""A Spark Connect server started from the installed pyspark on loopback (``local[2]``), for
the whole session, and a client session of it. Skipped, with the reason, only where the
server cannot start: pyspark without the Connect server's jar, the client's packages missing
(``pip install sparkdl[connect]``), or a server that does not come up."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

START_TIMEOUT = 120.0


def _skip_reason() -> str | None:
    try:
        import pyspark
    except ImportError:
        return "pyspark is not installed"
    jars = list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar"))
    if not jars:
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
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """``sc://127.0.0.1:PORT`` of a Spark Connect server whose Python workers run this
    interpreter and import this checkout."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import pyspark
    home = Path(pyspark.__file__).parent
    port = _free_port()
    log = tmp_path_factory.mktemp("connect") / "server.log"
    env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    command = [str(home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
               "--master", "local[2]", "--driver-memory", "2g",
               "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
               "--conf", f"spark.connect.grpc.binding.port={port}",
               "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=4",
               "--properties-file", str(ROOT / "spark-defaults.conf"), "spark-internal"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_bytes().decode(errors="replace").splitlines()[-15:]
                pytest.skip("the Spark Connect server did not start: " + " | ".join(tail))
            time.sleep(0.2)
        yield f"sc://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


_MODE = "SPARK_CONNECT_MODE_ENABLED"


@pytest.fixture(scope="session")
def remote(connect_server):
    """A Spark Connect client session of the test server. pyspark marks a process that opens
    one as a Connect client (``pyspark.sql.functions`` and pyspark.ml then build Connect
    plans); the mark stays on only while a test of this folder runs (``connect_mode``), so
    the suite's classic session works before and after."""
    from pyspark.sql import SparkSession
    before = os.environ.get(_MODE)
    session = SparkSession.builder.remote(connect_server).create()
    _restore(before)
    yield session
    os.environ[_MODE] = "1"
    session.stop()
    _restore(before)


def _restore(value) -> None:
    if value is None:
        os.environ.pop(_MODE, None)
    else:
        os.environ[_MODE] = value


@contextlib.contextmanager
def _classic():
    before = os.environ.pop(_MODE, None)
    try:
        yield
    finally:
        _restore(before)


@pytest.fixture
def classic():
    """``with classic():`` runs its block as a classic client would (a test compares the two
    sessions in one process)."""
    return _classic


@pytest.fixture(autouse=True)
def connect_mode():
    """This process is a Connect client for the length of the test, as a user's would be."""
    before = os.environ.get(_MODE)
    os.environ[_MODE] = "1"
    yield
    _restore(before)
