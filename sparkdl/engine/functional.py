"""The functional graph: ``Model(inputs=[a, b], outputs=out)`` over symbolic tensors.

The graph is the DAG of layer calls recorded by SymbolicTensors. Forward runs the calls in
topological order; backward walks them in reverse, summing the gradients of a tensor that
feeds several layers. Each layer is called once in a graph (its forward cache holds one call).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sparkdl.engine.custom_objects import get_registered_name
from sparkdl.engine.layers.base import Layer
from sparkdl.engine.layers.core import InputLayer
from sparkdl.engine.symbolic import SymbolicTensor, SymbolicTensors


class Graph:
    def __init__(self, inputs: SymbolicTensors, outputs: SymbolicTensors, who: str = "Model"):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if isinstance(outputs, (list, tuple)):
            if len(outputs) != 1:
                raise ValueError(f"{who}: expected one output tensor, received {len(outputs)}")
            outputs = outputs[0]
        for t in inputs + [outputs]:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{who}: expected symbolic tensors from Input(...) and layer calls, "
                                f"received {type(t).__name__}: {t!r}")
        for t in inputs:
            if not isinstance(t.layer, InputLayer):
                raise ValueError(f"{who}: inputs must come from Input(...), received the output "
                                 f"of layer '{t.layer.name}'")
        self.inputs, self.output = inputs, outputs
        self.nodes = self._topological(outputs)
        reachable_inputs = [n for n in self.nodes if not n.inputs]
        for n in reachable_inputs:
            if n not in inputs:
                raise ValueError(f"{who}: the output depends on Input '{n.layer.name}', which is "
                                 f"not in inputs")
        layer_ids = [id(n.layer) for n in self.nodes]
        if len(set(layer_ids)) != len(layer_ids):
            shared = next(n.layer.name for n in self.nodes if layer_ids.count(id(n.layer)) > 1)
            raise ValueError(f"{who}: layer '{shared}' is called more than once; a layer can be "
                             f"used once per model")
        self.compute_nodes = [n for n in self.nodes if n.inputs]
        self._consumers_need_grad()

    @staticmethod
    def _topological(output: SymbolicTensor) -> list[SymbolicTensor]:
        order: list[SymbolicTensor] = []
        state: dict[int, int] = {}
        stack = [(output, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                state[id(node)] = 2
                order.append(node)
                continue
            if state.get(id(node)) is not None:
                continue
            state[id(node)] = 1
            stack.append((node, True))
            for parent in reversed(node.inputs):
                if state.get(id(parent)) is None:
                    stack.append((parent, False))
        return order

    def _consumers_need_grad(self) -> None:
        """A layer computes dL/dx only when something upstream of it has trainable weights."""
        upstream_params: dict[int, bool] = {}
        for node in self.nodes:
            has = bool(node.layer.params) or any(upstream_params[id(p)] for p in node.inputs)
            upstream_params[id(node)] = has
            if node.inputs:
                node.layer.needs_input_grad = any(upstream_params[id(p)] for p in node.inputs)
        self._upstream_params = upstream_params

    # ``_upstream_params`` is keyed by object ids, which a copy (pickle, cloudpickle, deepcopy)
    # does not keep: leave it out and rebuild it from the copied nodes.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_upstream_params", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._consumers_need_grad()

    @property
    def layers(self) -> list[Layer]:
        return [n.layer for n in self.compute_nodes]

    # With logits=True the output layer has a logits form (see Model._update_fusion).
    def forward(self, xs: list[np.ndarray], training: bool, logits: bool = False) -> np.ndarray:
        values = {id(t): x for t, x in zip(self.inputs, xs)}
        out = self.output
        for node in self.compute_nodes:
            args = [values[id(p)] for p in node.inputs]
            arg = args if len(args) > 1 or _is_merge(node.layer) else args[0]
            if logits and node is out:
                values[id(node)] = node.layer.forward_logits(arg, training)  # type: ignore[attr-defined]
            else:
                values[id(node)] = node.layer.forward(arg, training)
        return values[id(out)]

    def backward(self, dLdy: np.ndarray, logits: bool = False,
                 done: Callable[[Layer], None] | None = None) -> None:
        """Backward from the output's ``dLdy``; ``done(layer)`` (if given) right after each
        layer's backward (a layer is called once per model: its gradients are then final)."""
        grads = {id(self.output): dLdy}
        for node in reversed(self.compute_nodes):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            layer = node.layer
            dx = layer.backward_logits(g) if logits and node is self.output else layer.backward(g)  # type: ignore[attr-defined]
            if done is not None:
                done(layer)
            if dx is None:
                continue
            parts = dx if isinstance(dx, (list, tuple)) else [dx]
            for parent, part in zip(node.inputs, parts):
                if part is None or not self._upstream_params[id(parent)] or not parent.inputs:
                    continue
                key = id(parent)
                grads[key] = part if key not in grads else grads[key] + part

    def get_config(self) -> dict[str, Any]:
        names = {id(n): n.layer.name for n in self.nodes}
        return {
            "inputs": [t.layer.get_config() for t in self.inputs],
            "layers": [{"class_name": get_registered_name(type(n.layer)), "config": n.layer.get_config(),
                        "inbound": [names[id(p)] for p in n.inputs]} for n in self.compute_nodes],
            "output": names[id(self.output)],
        }

    @staticmethod
    def from_config(config: dict[str, Any],
                    custom_objects: dict[str, Any] | None = None) -> tuple[list[SymbolicTensor], SymbolicTensor]:
        from sparkdl.engine import layers as layers_mod
        from sparkdl.engine.layers.core import Input
        tensors = {}
        inputs = []
        for spec in config["inputs"]:
            t = Input(spec["shape"], dtype=spec.get("dtype", "float32"), name=spec["name"])
            tensors[spec["name"]] = t
            inputs.append(t)
        for spec in config["layers"]:
            layer = layers_mod.get(spec["class_name"], custom_objects).from_config(spec["config"])
            args = [tensors[name] for name in spec["inbound"]]
            tensors[layer.name] = layer(args if len(args) > 1 or _is_merge(layer) else args[0])
        return inputs, tensors[config["output"]]


def _is_merge(layer: Layer) -> bool:
    return getattr(layer, "is_merge", False)
