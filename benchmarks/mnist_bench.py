"""What the MNIST benchmarks share: a ``local[2]`` session, the MNIST 5k split as a cached
two-partition DataFrame, and the MLP they train (784-256-128-10, SGD 0.05 momentum 0.9)."""
from __future__ import annotations

import os
import sys


def mnist_on_local2(app_name: str):
    """``(spark, df, x_test, y_test, model)``: ``model(seed)`` builds the compiled MLP after
    ``sparkdl.set_random_seed(seed)``."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import sparkdl
    from sparkdl.data.samples import mnist_5k
    from sparkdl.engine import optimizers, zoo
    from sparkdl.spark import from_arrays, get_session

    spark = get_session("local[2]", app_name=app_name, conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    x, y, x_test, y_test = mnist_5k(0)
    df = from_arrays(spark, x, y, num_partitions=2).cache()
    df.count()

    def model(seed):
        sparkdl.set_random_seed(seed)
        m = zoo.mlp()
        m.compile(optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    return spark, df, x_test, y_test, model
