"""Fixtures every test directory may use: the one local[2] SparkSession of the suite (UI off,
sparkdl's defaults; started only when a test asks for it, so engine and distributed tests run
without a JVM), PyTorch for reference comparisons (skipped without it) and a fixed seed for
weight initialisation."""
import os
import sys

import pytest

import sparkdl


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from sparkdl.spark import get_session
    session = get_session("local[2]", app_name="sparkdl-tests",
                          conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
                                "spark.default.parallelism": "2"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def torch():
    """PyTorch for the reference comparisons: the test is skipped where it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def seeded():
    """Deterministic initial weights for the test (``pytestmark = pytest.mark.usefixtures("seeded")``)."""
    sparkdl.set_random_seed(1234)
