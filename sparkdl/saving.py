"""Keras' ``keras.saving`` for sparkdl: saving and loading models, and the custom objects
every loader finds by name.

``@register_serializable(package="Custom", name=None)`` (also under Keras' name
``register_keras_serializable``) records a user layer, activation function, loss, metric,
initializer or optimizer under ``"package>name"``; ``custom_object_scope({...})`` makes names
resolvable for the length of a ``with`` block. ``load_model``, ``model_from_json``, checkpoints
and the pyspark.ml readers (``PipelineModel.load``) consult both, ``custom_objects=`` and
scopes before the registry. The registry lives in ``sparkdl.engine.custom_objects``.
"""
from sparkdl.engine.custom_objects import (custom_object_scope, get_custom_objects, get_registered_name,
                                           get_registered_object, register_keras_serializable,
                                           register_serializable)
from sparkdl.engine.serialization import load_model, model_from_json, save_model

__all__ = ["custom_object_scope", "get_custom_objects", "get_registered_name", "get_registered_object",
           "load_model", "model_from_json", "register_keras_serializable", "register_serializable",
           "save_model"]
