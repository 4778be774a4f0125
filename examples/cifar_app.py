"""SparkNet's CifarApp on sparkdl: the cifar10_quick net trained on CIFAR-10 with Spark.

Reads the CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin) from --data-dir, trains
synchronously with tau local steps per round (model averaging, as SparkNet does), evaluates on
the executors and prints the test accuracy.

    spark-submit --properties-file spark-defaults.conf examples/cifar_app.py --data-dir DIR \\
        [--workers N --epochs E --tau T] [--download]
"""
import argparse
import logging
import time

import sparkdl
from sparkdl.data import cifar10
from sparkdl.engine import optimizers, zoo
from sparkdl.spark import SparkModel, from_arrays, get_session


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True,
                        help="folder with the CIFAR-10 binary files (or their cifar-10-batches-bin folder)")
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 into --data-dir first")
    parser.add_argument("--workers", type=int, default=2, help="partitions that train (default 2)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    parser.add_argument("--tau", type=int, default=10, help="local steps per round (default 10)")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per step (default 100)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and dropout")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="0 silent, 1 progress bar, 2 a line per epoch (default)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    try:
        if args.download:
            cifar10.download(args.data_dir)
        x_train, y_train, x_test, y_test = cifar10.load(args.data_dir)
    except (OSError, ValueError) as error:      # no files, no network, not CIFAR-10 files
        raise SystemExit(f"cifar_app.py: {error}") from None
    spark = get_session(app_name="sparkdl-cifar")
    spark.sparkContext.setLogLevel("WARN")
    train = from_arrays(spark, x_train, y_train, num_partitions=args.workers).cache()
    test = from_arrays(spark, x_test, y_test).cache()

    sparkdl.set_random_seed(args.seed)
    model = zoo.cifar_quick()
    model.compile(optimizer=optimizers.SGD(learning_rate=args.lr, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    spark_model = SparkModel(model, mode="sync", frequency=args.tau, num_workers=args.workers, seed=args.seed)
    start = time.perf_counter()
    history = spark_model.fit(train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)
    elapsed = time.perf_counter() - start
    result = spark_model.evaluate(test)
    print(f"test accuracy: {result['accuracy']:.4f}  test loss: {result['loss']:.4f}  "
          f"(fit {elapsed:.1f}s: {len(history.rounds)} rounds of tau={args.tau}, {args.workers} workers, "
          f"{len(x_train)} training images)")
    spark.stop()
    return result


if __name__ == "__main__":
    main()
