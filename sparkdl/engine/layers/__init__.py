"""The layer stack: the Layer protocol and every built-in layer, by class name."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparkdl.engine.custom_objects import get_registered_object
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


def builtin(class_name: str) -> type[Layer] | None:
    """The built-in layer class called ``class_name`` (Keras names too), or None."""
    cls = globals().get(class_name) if class_name in __all__ else None
    return cls if isinstance(cls, type) and issubclass(cls, Layer) else None


def get(class_name: str, custom_objects: Mapping[str, Any] | None = None) -> type[Layer]:
    """The layer class called ``class_name``: in ``custom_objects``, the custom-object scopes
    and the registry (``sparkdl.saving``) first, then among the built-ins."""
    found = get_registered_object(class_name, custom_objects)
    if found is not None:
        if not (isinstance(found, type) and issubclass(found, Layer)):
            raise TypeError(f"expected the custom object {class_name!r} to be a Layer subclass, "
                            f"received {found!r}")
        return found
    cls = builtin(class_name)
    if cls is not None:
        return cls
    raise ValueError(f"unknown layer class {class_name!r}; register it with "
                     f"@register_serializable or pass custom_objects={{'{class_name}': cls}} "
                     f"for a user layer (built-in: {sorted(__all__)})")
