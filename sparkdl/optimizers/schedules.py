"""Keras' ``keras.optimizers.schedules`` for sparkdl: learning-rate schedules
(``from sparkdl.optimizers.schedules import CosineDecay``), defined in
``sparkdl.engine.schedules``."""
from sparkdl.engine.schedules import (CosineDecay, ExponentialDecay, LearningRateSchedule, LinearWarmup,
                                      PiecewiseConstantDecay, StepDecay, deserialize)

__all__ = ["CosineDecay", "ExponentialDecay", "LearningRateSchedule", "LinearWarmup",
           "PiecewiseConstantDecay", "StepDecay", "deserialize"]
