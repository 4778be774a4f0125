"""Keras' ``keras.losses`` for sparkdl: ``from sparkdl.losses import BinaryCrossentropy``.

The losses live in ``sparkdl.engine.losses``; this module is their public import path.
"""
from sparkdl.engine.losses import (BinaryCrossentropy, CategoricalCrossentropy, Loss, MeanSquaredError,
                                   SparseCategoricalCrossentropy, get, names)

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanSquaredError",
           "SparseCategoricalCrossentropy", "get", "names"]
