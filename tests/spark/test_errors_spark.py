"""Divergence during ``SparkModel.fit`` is a ``TrainingDivergedError`` (the Spark subclass, still
a ``FloatingPointError``), whether a partition or the driver's step on the mean gradient
diverges; the model keeps the weights it had before."""
import numpy as np
import pytest

from sparkdl import SparkTrainingDivergedError, TrainingDivergedError, layers, optimizers
from sparkdl.models import Input, Sequential


@pytest.mark.parametrize("aggregate, learning_rate, where", [
    ("weights", 1e10, r"training diverged in round 1 \(partition 0: .*partition 1: "),
    ("gradients", 1e38, r"in round 1, .* after the driver's optimizer step"),
])
def test_spark_divergence_is_a_training_diverged_error(spark, aggregate, learning_rate, where):
    from sparkdl.spark import SparkModel, from_arrays
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32) * 1e3
    y = np.full((64, 1), 1e6, np.float32)
    model = Sequential([Input((3,)), layers.Dense(1)])
    model.compile(optimizers.SGD(learning_rate=learning_rate), "mse")
    before = model.get_flat_weights()
    spark_model = SparkModel(model, num_workers=2, aggregate=aggregate, seed=0)
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match=where) as info:
        spark_model.fit(from_arrays(spark, x, y, num_partitions=2), epochs=2, batch_size=8, verbose=0)
    assert type(info.value) is SparkTrainingDivergedError
    assert isinstance(info.value, FloatingPointError)
    np.testing.assert_array_equal(model.get_flat_weights(), before)
