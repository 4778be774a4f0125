"""Sequential: a plain stack of layers, each feeding the next."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from sparkdl.engine.custom_objects import get_registered_name
from sparkdl.engine.layers.base import Layer
from sparkdl.engine.layers.core import InputLayer
from sparkdl.engine.model import Model
from sparkdl.engine.symbolic import SymbolicTensor


class Sequential(Model):
    def __init__(self, layers: Iterable[Layer | SymbolicTensor] | None = None, name: str | None = None):
        super().__init__(name=name or "sequential")  # no graph: the chain below replaces it
        self._input: InputLayer | None = None
        self._layers: list[Layer] = []
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def add(self, layer: Layer | SymbolicTensor) -> None:
        """Append a layer (or an ``Input(shape)``, which must come first) to the stack."""
        if isinstance(layer, SymbolicTensor):
            if layer.inputs:
                raise TypeError("Sequential.add: expected a layer or Input(shape), received the "
                                "output of a layer call (use Model(inputs, outputs) for graphs)")
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._input is not None or self._layers:
                raise ValueError("Sequential.add: an Input must come first and only once")
            self._input = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, received {type(layer).__name__}: {layer!r}")
        if layer in self._layers:
            raise ValueError(f"Sequential.add: layer '{layer.name}' is already in the model")
        if not self._layers and self._input is None and layer.declared_input_shape is not None:
            self._input = InputLayer(layer.declared_input_shape,
                                     dtype=getattr(layer, "input_dtype", "float32"))
        self._layers.append(layer)
        if self._input is not None:
            self._build_layers()

    def _build_layers(self) -> None:
        assert self._input is not None, "callers build once the input is known"
        shape = self._input.shape
        for layer in self._layers:
            shape = layer.ensure_built(shape)
        for i, layer in enumerate(self._layers):
            # The first layer with weights needs no gradient for its input: that skips the
            # largest matmul of a first Dense layer. Layers before it pass gradients through.
            layer.needs_input_grad = any(l.params for l in self._layers[:i])
        self._pack()

    def _build_from_data(self, x: npt.ArrayLike | None) -> None:
        if not self._layers:
            raise ValueError(f"model '{self.name}' has no layers")
        shape = getattr(x[0] if isinstance(x, (list, tuple)) else x, "shape", None)
        if shape is None or len(shape) < 2:
            raise ValueError(f"model '{self.name}': expected x with a batch axis, received shape {shape}")
        self._input = InputLayer(tuple(shape[1:]),
                                 dtype=getattr(self._layers[0], "input_dtype", "float32"))
        self._build_layers()

    def _all_layers(self) -> list[Layer]:
        return self._layers

    def feeding_input(self, layer: Layer) -> int | None:
        return 0 if self._layers and self._layers[0] is layer else None

    def input_consumers(self, index: int) -> list[Layer]:
        return self._layers[:1] if index == 0 else []

    def _input_specs(self) -> list[tuple[tuple[int, ...], str]]:
        return [(self._input.shape, self._input.dtype)]  # type: ignore[union-attr]  # set once built

    def _output_layer(self) -> Layer:
        return self._layers[-1]

    # With logits=True the last layer has a logits form (see Model._update_fusion).
    def _forward(self, xs: list[np.ndarray], training: bool, logits: bool = False) -> np.ndarray:
        x = xs[0]
        last = len(self._layers) - 1
        for i, layer in enumerate(self._layers):
            x = layer.forward_logits(x, training) if logits and i == last else layer.forward(x, training)  # type: ignore[attr-defined]
        return x

    def _backward(self, dLdy: np.ndarray, logits: bool = False,
                  done: Callable[[Layer], None] | None = None) -> None:
        layers = self._layers
        g = layers[-1].backward_logits(dLdy) if logits else layers[-1].backward(dLdy)  # type: ignore[attr-defined]
        if done is not None:
            done(layers[-1])
        for layer in reversed(layers[:-1]):
            if g is None:
                break
            g = layer.backward(g)
            if done is not None:
                done(layer)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "layers": [
            {"class_name": get_registered_name(type(layer)), "config": layer.get_config()}
            for layer in self._layers]}
        if self._input is not None:
            config["input"] = self._input.get_config()
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Sequential:
        from sparkdl.engine import layers as layers_mod
        model = cls(name=config.get("name"))
        if "input" in config:
            model.add(InputLayer(**config["input"]))
        for spec in config["layers"]:
            model.add(layers_mod.get(spec["class_name"], custom_objects).from_config(spec["config"]))
        return model
