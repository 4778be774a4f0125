"""Keras' ``keras.metrics`` for sparkdl: ``from sparkdl.metrics import AUC, Accuracy``.

The metrics live in ``sparkdl.engine.metrics``; this module is their public import path.
"""
from sparkdl.engine.metrics import (AUC, Accuracy, LogLoss, MeanAbsoluteError, MeanSquaredError, Metric,
                                    TopKAccuracy, get, names)

__all__ = ["AUC", "Accuracy", "LogLoss", "MeanAbsoluteError", "MeanSquaredError", "Metric", "TopKAccuracy",
           "get", "names"]
