"""The layer stack: the Layer protocol and every built-in layer, by class name."""
from __future__ import annotations

from typing import Any

from sparkdl.engine.layers.activation import Activation, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from sparkdl.engine.layers.base import ActivatedLayer, Layer
from sparkdl.engine.layers.conv import AveragePooling2D, AvgPool2D, Conv2D, MaxPool2D, MaxPooling2D
from sparkdl.engine.layers.core import Dense, Dropout, Flatten, Input, InputLayer, Reshape
from sparkdl.engine.layers.embedding import Embedding
from sparkdl.engine.layers.merge import Add, Concatenate
from sparkdl.engine.layers.norm import BatchNorm

BatchNormalization = BatchNorm  # the Keras name

__all__ = ["Activation", "ActivatedLayer", "Add", "AveragePooling2D", "AvgPool2D", "BatchNorm",
           "BatchNormalization", "Concatenate", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten",
           "Input", "InputLayer", "Layer", "LeakyReLU", "MaxPool2D", "MaxPooling2D", "ReLU", "Reshape",
           "Sigmoid", "Softmax", "Tanh"]


def get(class_name: str, custom_objects: dict[str, Any] | None = None) -> type[Layer]:
    """The layer class called ``class_name``, looked up in ``custom_objects`` first."""
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    cls = globals().get(class_name)
    if isinstance(cls, type) and issubclass(cls, Layer):
        return cls
    raise ValueError(f"unknown layer class {class_name!r}; pass custom_objects={{'{class_name}': cls}} "
                     f"for a user layer (built-in: {sorted(__all__)})")
