"""Model classes and persistence: ``Sequential``, ``Model``, ``Input``, ``load_model`` and
``model_from_json`` (Keras' ``keras.models``)."""
from sparkdl.engine.layers.core import Input
from sparkdl.engine.model import Model
from sparkdl.engine.sequential import Sequential
from sparkdl.engine.serialization import load_model, model_from_json

__all__ = ["Input", "Model", "Sequential", "load_model", "model_from_json"]
