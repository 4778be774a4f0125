"""Data the Spark tests share (the session itself comes from tests/conftest.py)."""
import pytest


@pytest.fixture(scope="session")
def data():
    """scikit-learn's digits (pixels in [0, 1]), a stratified 80/20 split: ``x, y, x_test, y_test``."""
    from sparkdl.data.samples import digits
    x_train, y_train, x_test, y_test = digits(seed=0)
    return {"x": x_train, "y": y_train, "x_test": x_test, "y_test": y_test}


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
