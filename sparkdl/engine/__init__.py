"""The NumPy engine: layers, activations, losses, optimizers, metrics, callbacks and models.

Imports nothing from pyspark, so models can be built, trained and saved anywhere NumPy runs,
and shipped unchanged to Spark executors.
"""
from sparkdl.engine import (activations, callbacks, initializers, layers, losses, metrics,
                            optimizers, schedules)
from sparkdl.engine.model import Model
from sparkdl.engine.random import set_random_seed
from sparkdl.engine.sequential import Sequential
from sparkdl.engine.serialization import load_model
from sparkdl.errors import NotCompiledError, TrainingDivergedError

__all__ = ["activations", "callbacks", "initializers", "layers", "losses", "metrics", "optimizers",
           "schedules", "Model", "NotCompiledError", "TrainingDivergedError", "Sequential",
           "load_model", "set_random_seed"]
