"""The compute-thread budget (``sparkdl.engine.threads``): its API, BLAS control through
threadpoolctl or the ctypes fallback, the BLAS threading a model runs under, and training
results that do not depend on the thread count beyond float32 rounding."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import sparkdl
from sparkdl import callbacks, layers, optimizers
from sparkdl.engine import threads
from sparkdl.models import Input, Sequential

CPUS = threads._default_threads()


@pytest.fixture(autouse=True)
def _restore_threads():
    budget, blas = threads._budget, threads.get_blas_threads()
    yield
    threads.set_num_threads(budget)
    if blas is not None:
        threads.set_blas_threads(blas)


def needs_blas_control():
    if threads.get_blas_threads() is None:
        pytest.skip("no BLAS whose threads can be set in this process")


# ---- the budget ----------------------------------------------------------------------------------
def test_default_budget_is_the_cpus_this_process_may_use():
    threads.set_num_threads(None)
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads.get_num_threads() == expected
    threads.set_num_threads(np.int64(1))
    assert threads.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match=r"set_num_threads: expected an int >= 1 or None, received"):
        threads.set_num_threads(bad)


def test_set_num_threads_sets_blas_threads_too():
    needs_blas_control()
    threads.set_num_threads(1)
    assert threads.get_blas_threads() == 1
    threads.set_num_threads(CPUS)
    assert threads.get_blas_threads() == CPUS


def test_blas_limit_restores_the_previous_count():
    needs_blas_control()
    threads.set_blas_threads(CPUS)
    with threads.blas_limit(1):
        assert threads.get_blas_threads() == 1
        with threads.blas_limit(1):  # nested: nothing to change, nothing to restore
            assert threads.get_blas_threads() == 1
        assert threads.get_blas_threads() == 1
    assert threads.get_blas_threads() == CPUS


def test_ctypes_fallback_drives_the_openblas_numpy_loaded():
    libs = threads._openblas_via_ctypes()
    if not libs:
        pytest.skip("no OpenBLAS mapped into this process (NumPy built against another BLAS)")
    old = [lib.get() for lib in libs]      # NumPy's OpenBLAS, and SciPy's once sklearn is in
    try:
        for lib in libs:
            lib.set(1)
        assert [lib.get() for lib in libs] == [1] * len(libs)
        if threads.get_blas_threads() is not None:  # the same libraries seen through threadpoolctl
            assert threads.get_blas_threads() == 1
    finally:
        for lib, n in zip(libs, old):
            lib.set(n)


def test_without_threadpoolctl_the_fallback_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # any import of it now fails
    monkeypatch.setattr(threads, "_blas_libs", None)
    assert len(threads._blas()) == len(threads._openblas_via_ctypes())


def test_no_process_map_means_blas_is_left_alone(tmp_path):
    assert threads._openblas_via_ctypes(str(tmp_path / "no-such-maps")) == []


def test_run_parts_waits_for_every_part_and_reraises():
    threads.set_num_threads(3)
    done = []

    def fn(part, i):
        if i == 0:
            raise KeyError("part 0")
        done.append(part)
        return part

    with pytest.raises(KeyError, match="part 0"):
        threads.run_parts(fn, ["a", "b", "c"])
    assert sorted(done) == ["b", "c"]
    assert threads.run_parts(lambda part, i: (part, i), ["a", "b", "c"]) == [("a", 0), ("b", 1), ("c", 2)]


# ---- what models run under ------------------------------------------------------------------------
class BlasDuringTraining(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def on_batch_end(self, batch, logs=None):
        self.seen.add(threads.get_blas_threads())


def small_cnn():
    return Sequential([Input((1, 12, 12)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2),
                       layers.Flatten(), layers.Dense(3, activation="softmax")])


def small_mlp():
    return Sequential([Input((8,)), layers.Dense(4, activation="relu"),
                       layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("build, shape, blas_inside", [(small_cnn, (1, 12, 12), 1), (small_mlp, (8,), None)],
                         ids=["conv_model", "dense_model"])
def test_conv_models_run_blas_single_threaded_and_restore_it(build, shape, blas_inside):
    needs_blas_control()
    if CPUS < 2:
        pytest.skip("needs 2 CPUs to tell 1 BLAS thread from the budget")
    threads.set_num_threads(2)
    rng = np.random.default_rng(0)
    x, y = rng.random((16,) + shape, dtype=np.float32), rng.integers(0, 3, 16)
    model = build()
    model.compile("sgd", "sparse_categorical_crossentropy")
    probe = BlasDuringTraining()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    assert probe.seen == {blas_inside or 2}
    assert threads.get_blas_threads() == 2
    model.predict(x)
    model.evaluate(x, y)
    model.train_on_batch(x, y)
    assert threads.get_blas_threads() == 2


# ---- results do not depend on the thread count ---------------------------------------------------
def train_lenet_like(n_threads):
    """Gradients at the initial weights, predictions, and the weights after two epochs of a
    conv net on batches large enough that every conv and pooling op splits its work."""
    threads.set_num_threads(n_threads)
    sparkdl.set_random_seed(3)
    model = Sequential([Input((1, 28, 28)), layers.Conv2D(20, 5), layers.MaxPool2D(2),
                        layers.Conv2D(50, 5, activation="relu"), layers.AvgPool2D(3, 2, padding="same"),
                        layers.Conv2D(16, 3, padding="same"), layers.Flatten(),
                        layers.Dense(10, activation="softmax")])
    model.compile(optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 96)
    _, grads = model.compute_gradients(x, y)
    predictions = model.predict(x)
    model.fit(x, y, batch_size=48, epochs=2, seed=0, verbose=0)
    return grads, predictions, model.get_flat_weights()


def test_one_thread_and_two_threads_agree_to_float32_rounding():
    """Not bitwise: each thread sums its share of the batch into dW, and the shares are then
    added, an order that depends on the thread count. Predictions were bitwise equal in our
    runs, but the BLAS is free to round differently for GEMMs of different heights."""
    g1, p1, w1 = train_lenet_like(1)
    g2, p2, w2 = train_lenet_like(2)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-6)


def test_same_thread_count_is_bitwise_reproducible():
    g1, p1, w1 = train_lenet_like(2)
    g2, p2, w2 = train_lenet_like(2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(w1, w2)
