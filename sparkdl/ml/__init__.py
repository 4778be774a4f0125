"""pyspark.ml stages for sparkdl models (imports pyspark)."""
from sparkdl.ml.stages import NNClassifier, NNClassifierModel, NNEstimator, NNModel

__all__ = ["NNEstimator", "NNModel", "NNClassifier", "NNClassifierModel"]
