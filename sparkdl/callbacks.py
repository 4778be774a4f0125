"""Keras' ``keras.callbacks`` for sparkdl: ``from sparkdl.callbacks import EarlyStopping``.

The callbacks live in ``sparkdl.engine.callbacks``; this module is their public import path.
"""
from sparkdl.engine.callbacks import (Callback, CallbackList, EarlyStopping, History, LearningRateScheduler,
                                      ModelCheckpoint)

__all__ = ["Callback", "CallbackList", "EarlyStopping", "History", "LearningRateScheduler", "ModelCheckpoint"]
