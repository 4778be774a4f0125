"""Inference at scale: an ``NNClassifierModel.transform`` on the executors against ``predict``
on a NumPy array on the driver, for the MNIST MLP (784-256-128-10).

The MNIST 5k images are repeated into a cached DataFrame of ``--rows`` rows (``array<float>``
features, ``--partitions`` partitions) on local[2]. Measured, each the median of
``--repeats`` runs:
  transform   the stage's transform, forced with Spark's ``noop`` sink (Arrow batches in,
              prediction/probability/rawPrediction out, the model broadcast once);
  collect     collecting the features to the driver as one NumPy array through Arrow
              (``toArrow``; what a driver-side predict needs first);
  predict     ``model.predict`` on that array in the driver (2 threads).

    python benchmarks/inference.py [--rows 50000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import sparkdl
    from sparkdl.data.samples import mnist_5k
    from sparkdl.engine import optimizers, zoo
    from sparkdl.ml import NNClassifierModel
    from sparkdl.spark import from_arrays, get_session

    print(f"# inference: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    spark = get_session("local[2]", app_name="sparkdl-bench-inference",
                        conf={"spark.ui.enabled": "false", "spark.driver.memory": "4g"})
    spark.sparkContext.setLogLevel("ERROR")
    x, y, _, _ = mnist_5k(0)
    reps = -(-args.rows // len(x))
    big_x, big_y = np.tile(x, (reps, 1))[:args.rows], np.tile(y, reps)[:args.rows]
    df = from_arrays(spark, big_x, big_y, num_partitions=args.partitions).cache()
    df.count()
    sparkdl.set_random_seed(0)
    model = zoo.mlp()
    model.compile(optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    stage = NNClassifierModel(model=model)

    def transform():
        stage.transform(df).write.format("noop").mode("overwrite").save()

    def collect():
        column = df.select("features").toArrow().column(0).combine_chunks()   # array<float>, via Arrow
        return column.values.to_numpy().astype(np.float32, copy=False).reshape(len(column), -1)

    def run(fn):
        fn()                                              # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    t_transform = run(transform)
    features = collect()
    t_collect = run(collect)
    t_predict = run(lambda: model.predict(features, batch_size=1024))
    n = args.rows
    print(f"MNIST MLP, {n:,} rows, {args.partitions} partitions, local[2], median of {args.repeats}")
    print(f"  transform on the executors      {n / t_transform:10,.0f} rows/s  ({t_transform:.2f} s)")
    print(f"  predict on a NumPy array         {n / t_predict:10,.0f} rows/s  ({t_predict:.2f} s)")
    print(f"  collect + predict on the driver  {n / (t_collect + t_predict):10,.0f} rows/s  "
          f"({t_collect:.2f} s + {t_predict:.2f} s)")
    print(f"  transform / (collect + predict): {(t_collect + t_predict) / t_transform:.2f}x the rows/s;"
          f" transform / predict alone: {t_predict / t_transform:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
