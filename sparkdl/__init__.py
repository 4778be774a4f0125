"""sparkdl: train neural networks inside Apache Spark with a NumPy layer stack.

The engine's public modules follow Keras' import paths (``sparkdl.layers``,
``sparkdl.optimizers``, ``sparkdl.losses``, ``sparkdl.metrics``, ``sparkdl.callbacks``,
``sparkdl.models``, ``sparkdl.saving``) and need only NumPy; ``SparkModel``,
``load_spark_model`` and the pyspark.ml
stages import pyspark when first used. The exceptions callers catch (``sparkdl.errors``) are
importable from here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkdl import callbacks, layers, losses, metrics, optimizers, saving
from sparkdl.engine.random import set_random_seed
from sparkdl.errors import (AuthenticationError, IntegrityError, NotCompiledError, ProtocolError, RemoteError,
                            SparkTrainingDivergedError, TrainingDivergedError)
from sparkdl.saving import custom_object_scope, register_serializable

if TYPE_CHECKING:
    from sparkdl.spark import SparkModel, load_spark_model

__version__ = "0.1.0"

__all__ = ["SparkModel", "load_spark_model", "callbacks", "layers", "losses", "metrics", "optimizers", "saving",
           "custom_object_scope", "register_serializable", "set_random_seed", "__version__",
           "AuthenticationError", "IntegrityError", "NotCompiledError", "ProtocolError", "RemoteError",
           "SparkTrainingDivergedError", "TrainingDivergedError"]


def __getattr__(name: str) -> Any:
    # SparkModel lives in the Spark layer; importing it starts pyspark, so only on demand.
    if name == "SparkModel":
        from sparkdl.spark import SparkModel
        return SparkModel
    if name == "load_spark_model":
        from sparkdl.spark import load_spark_model
        return load_spark_model
    raise AttributeError(f"module 'sparkdl' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dir() and tab completion list the Spark names although they are imported only on access.
    return sorted([*globals(), "SparkModel", "load_spark_model"])
