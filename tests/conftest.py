"""One local[2] SparkSession for every Spark test (UI off, sparkdl's defaults)."""
import os
import sys

import pytest

pyspark = pytest.importorskip("pyspark")


@pytest.fixture(scope="session")
def spark():
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
def mnist(spark):
    """The MNIST 5k split as arrays and as cached DataFrames (ml Vector features)."""
    from pyspark.ml.linalg import Vectors

    from sparkdl.data.samples import mnist_5k
    x_train, y_train, x_test, y_test = mnist_5k(seed=0)
    train = spark.createDataFrame([(Vectors.dense(r.astype(float)), float(l)) for r, l in zip(x_train, y_train)],
                                  ["features", "label"]).repartition(2).cache()
    test = spark.createDataFrame([(Vectors.dense(r.astype(float)), float(l)) for r, l in zip(x_test, y_test)],
                                 ["features", "label"]).cache()
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "train": train, "test": test}
