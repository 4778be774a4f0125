"""Keras' ``keras.optimizers`` for sparkdl: ``from sparkdl.optimizers import SGD, Adam``, and
the learning-rate schedules as ``sparkdl.optimizers.schedules``.

The optimizers live in ``sparkdl.engine.optimizers``; this package is their public import path.
"""
from sparkdl.engine.optimizers import SGD, Adagrad, Adam, Ftrl, Hyperparameter, Optimizer, RMSprop, get, names
from sparkdl.optimizers import schedules

__all__ = ["SGD", "Adagrad", "Adam", "Ftrl", "Hyperparameter", "Optimizer", "RMSprop", "get", "names",
           "schedules"]
