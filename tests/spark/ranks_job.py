"""Allreduce fits with more ranks than the tests' local[2] session holds, run through
spark-submit by test_allreduce.py (``--master local[4]``):

    spark-submit tests/spark/ranks_job.py --out FILE.json

Each fit runs with the driver hub and with ``transport="allreduce"`` on the digits; the report
says, per fit, whether the weights (and the optimizer's iterations and history) are identical,
and which partitions trained:
  three        three partitions: a ring of three ranks (weights aggregation, SGD with momentum)
  gradients    the same with aggregate="gradients" and Adam
  gap          four partitions of which the second holds no row: a ring of ranks 0, 2 and 3
"""
import argparse
import json
import os
import sys

import cloudpickle
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402

cloudpickle.register_pickle_by_value(faults)

FITS = {"three": (3, None, {}), "gradients": (3, None, {"aggregate": "gradients", "optimizer": "adam"}),
        "gap": (4, 1, {})}


def run(spark, partitions, empty, options) -> dict:
    from pyspark.sql import functions as F

    from sparkdl.spark import SparkModel
    frame = faults.digits_frame(spark, partitions=partitions)
    if empty is not None:
        frame = frame.where(F.spark_partition_id() != empty)
    options = dict(options)
    optimizer = options.pop("optimizer", "sgd")
    out = {}
    for transport in ("socket", "allreduce"):
        net = faults.model(optimizer=optimizer)
        history = SparkModel(net, frequency=4, num_workers=partitions, seed=0, transport=transport,
                             **options).fit(frame, epochs=2, batch_size=32, verbose=0)
        out[transport] = (net, history)
    (hub, expected), (ring, history) = out["socket"], out["allreduce"]
    return {"identical": bool(np.array_equal(ring.get_flat_weights(), hub.get_flat_weights())),
            "same_iterations": ring.optimizer.iterations == hub.optimizer.iterations,
            "same_history": history.history == expected.history,
            "rows": list(history.rows_per_partition), "empty": list(history.empty_partitions),
            "execution": history.settings["execution"], "rounds": len(history.rounds),
            "ring_bytes": history.rounds[0]["ring_bytes"],
            "state_bytes": hub.get_flat_weights().nbytes + sum(v.nbytes for v in hub.optimizer.slots.values())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from sparkdl.spark import get_session
    spark = get_session(app_name="sparkdl-ranks")
    spark.sparkContext.setLogLevel("ERROR")
    reports = {"master": spark.sparkContext.master}
    reports.update({name: run(spark, *fit) for name, fit in FITS.items()})
    with open(args.out, "w") as f:
        json.dump(reports, f)
    spark.stop()


if __name__ == "__main__":
    main()
