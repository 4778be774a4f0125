"""Keras' ``keras.layers`` for sparkdl: ``from sparkdl.layers import Dense, Dropout``.

The layers live in ``sparkdl.engine.layers``; this module is their public import path.
"""
from sparkdl.engine.layers import (Activation, ActivatedLayer, Add, AveragePooling2D, AvgPool2D, BatchNorm,
                                   BatchNormalization, Concatenate, Conv2D, Dense, Dropout, Embedding, Flatten,
                                   Input, InputLayer, Layer, LeakyReLU, MaxPool2D, MaxPooling2D, ReLU, Reshape,
                                   Sigmoid, Softmax, Tanh, builtin, get)

__all__ = ["Activation", "ActivatedLayer", "Add", "AveragePooling2D", "AvgPool2D", "BatchNorm",
           "BatchNormalization", "Concatenate", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten",
           "Input", "InputLayer", "Layer", "LeakyReLU", "MaxPool2D", "MaxPooling2D", "ReLU", "Reshape",
           "Sigmoid", "Softmax", "Tanh", "builtin", "get"]
