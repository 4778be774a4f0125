"""A Spark Connect server started from the installed pyspark on loopback (``local[2]``), for
the whole session, and a client session of it. Skipped, with the reason, only where the
server cannot start: pyspark without the Connect server's jar, the client's packages missing
(``pip install sparkdl[connect]``), or a server that does not come up."""
from __future__ import annotations

import contextlib
import os

import pytest

from tests.connect import server


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """``sc://127.0.0.1:PORT`` of a Spark Connect server whose Python workers run this
    interpreter and import this checkout (``server.ConnectServer``)."""
    reason = server.missing()
    if reason:
        pytest.skip(reason)
    running = server.ConnectServer(tmp_path_factory.mktemp("connect") / "server.log")
    try:
        url = running.__enter__()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        running.__exit__()


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
