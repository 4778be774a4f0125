"""``SparkModel(..., overlap=True)`` on local[2]: async workers that pull ahead and push in the
background learn MNIST as the async modes do, and a sync fit of gradient sums whose tasks
stream their pushes during backward ends with the same weights, bit for bit, as without."""
import numpy as np
import pytest

from sparkdl.spark import SparkModel, from_arrays
from tests.helpers import compiled_mlp


def test_async_workers_that_overlap_learn_mnist_as_async_does(mnist):
    """One push per step (frequency "batch"), where overlap changes most; the threshold of the
    async modes' tests, on the mean over seeds 0-2 (benchmarks/overlap.py, two runs: 0.921 to
    0.937 per seed with overlap, 0.928 to 0.936 without)."""
    accuracies = []
    for seed in (0, 1, 2):
        model = compiled_mlp(seed=seed)
        spark_model = SparkModel(model, mode="async", frequency="batch", num_workers=2, seed=seed,
                                 overlap=True)
        history = spark_model.fit(mnist["train"], epochs=10, batch_size=64, verbose=0)
        assert all(r["pushes"] == 2 * r["steps"] == 64 and r["duplicate_pushes"] == 0 for r in history.rounds)
        assert history.settings["overlap"] is True
        accuracies.append(model.evaluate(mnist["x_test"], mnist["y_test"])["accuracy"])
    assert np.mean(accuracies) >= 0.92, accuracies


@pytest.mark.parametrize("frequency", ["batch", 3])
def test_streamed_gradient_pushes_train_the_same_bits_as_packed_ones(spark, mnist, frequency):
    df = from_arrays(spark, mnist["x_train"][:512], mnist["y_train"][:512], num_partitions=2)
    weights = []
    for overlap in (False, True):
        model = compiled_mlp(seed=3)
        spark_model = SparkModel(model, mode="sync", frequency=frequency, aggregate="gradients",
                                 num_workers=2, seed=5, overlap=overlap)
        history = spark_model.fit(df, epochs=2, batch_size=32, verbose=0)
        assert history.settings["execution"] == "one job per fit"
        weights.append(model.get_flat_weights())
    np.testing.assert_array_equal(weights[1], weights[0])


def test_overlap_is_a_setting_saved_with_the_others():
    model = compiled_mlp()
    spark_model = SparkModel(model, mode="async", overlap=True)
    assert spark_model.get_config()["overlap"] is True
    assert SparkModel(model, **spark_model.get_config()).overlap is True
    with pytest.raises(ValueError, match="overlap"):
        SparkModel(model, mode="async", overlap="yes")
