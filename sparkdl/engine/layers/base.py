"""The Layer protocol every built-in and user layer follows.

A layer stores its configuration in ``__init__``, creates weights in ``build(input_shape)``
(shapes exclude the batch axis), computes ``forward(x, training)`` and, from what forward
cached, ``backward(dLdy)`` which returns dL/dx and fills ``self.grads``. Trainable weights
live in ``self.params`` (with the same keys in ``self.grads``); non-trainable weights such
as moving statistics live in ``self.state``. Once a model packs its layers, every array in
these dicts is a view into the model's flat buffers, so layers write gradients in place
(``np.matmul(..., out=self.grads["kernel"])`` or ``self.grads["b"][...] = ...``); a layer
that rebinds a dict entry instead still works, at the cost of one copy.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

import numpy as np
import numpy.typing as npt

from sparkdl.engine import activations, checks, custom_objects, initializers
from sparkdl.engine.random import new_generator

if TYPE_CHECKING:
    from sparkdl.engine.symbolic import SymbolicTensor

_L = TypeVar("_L", bound="Layer")

#: What ``activation=`` accepts: a name, a config dict, an ActivationFn, a function with a
#: ``derivative`` (``activations.Differentiable``), a Layer without weights, or None (linear).
ActivationLike: TypeAlias = "activations.Identifier | Layer"
#: What an ``*_initializer=`` argument accepts: a name, a config dict or an Initializer.
InitializerLike: TypeAlias = "str | dict[str, Any] | initializers.Initializer"

_name_counters: dict[str, itertools.count] = {}


def _unique_name(prefix: str) -> str:
    counter = _name_counters.setdefault(prefix, itertools.count(1))
    n = next(counter)
    return prefix if n == 1 else f"{prefix}_{n}"


def _snake(name: str) -> str:
    """Keras' layer-name convention: Conv2D -> conv2d, MaxPool2D -> max_pool2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Layer:
    """Base class of all layers. Subclasses override build/forward/backward/get_config."""

    #: True for layers whose forward pass draws random numbers in training (e.g. Dropout).
    stochastic = False
    #: True for layers that split their work over the engine's compute threads themselves
    #: (conv, pooling): a model holding one keeps BLAS single-threaded (sparkdl.engine.threads).
    own_threads = False

    def __init__(self, name: str | None = None, input_shape: int | Sequence[int] | None = None,
                 dtype: str | None = None, trainable: bool = True, input_dim: int | None = None):
        who = type(self).__name__
        if input_dim is not None:
            # Keras 2's spelling of input_shape=(input_dim,) on a first layer.
            if input_shape is not None:
                raise TypeError(f"{who}: expected input_shape or input_dim, not both; received "
                                f"input_shape={input_shape!r} and input_dim={input_dim!r}")
            input_shape = (checks.integer(input_dim, "input_dim", who, above=0),)
        self.name = name or _unique_name(_snake(type(self).__name__))
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.trainable = trainable
        self.built = False
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self._declared_input_shape = checks.shape(input_shape, "input_shape", who) \
            if input_shape is not None else None
        self.dtype = dtype
        #: Set to False by a model for a layer whose input is the model's data: backward then
        #: skips computing dL/dx (saving the largest matmul of a first Dense layer).
        self.needs_input_grad = True
        #: Generator for weight initialisation and for stochastic layers; a model reseeds it.
        self.rng = new_generator()

    # ---- weights -------------------------------------------------------------------------
    def add_weight(self, name: str, shape: Sequence[int],
                   initializer: InitializerLike = "glorot_uniform",
                   trainable: bool = True) -> np.ndarray:
        """Create a float32 weight of ``shape`` from ``initializer`` with the layer's random generator. A
        trainable weight goes to ``self.params`` (with a zero gradient in ``self.grads``), a
        non-trainable one to ``self.state``; returns the array."""
        value = initializers.get(initializer)(tuple(shape), self.rng).astype(np.float32)
        if trainable:
            self.params[name] = value
            self.grads[name] = np.zeros_like(value)
        else:
            self.state[name] = value
        return value

    @property
    def weights(self) -> list[np.ndarray]:
        """Trainable then non-trainable arrays, in creation order (the get_weights order)."""
        return list(self.params.values()) + list(self.state.values())

    def count_params(self) -> int:
        """The number of scalars in the layer's weights, trainable and non-trainable."""
        return int(sum(np.size(w) for w in self.weights))

    @property
    def declared_input_shape(self) -> tuple[int, ...] | None:
        """The ``input_shape`` given to the constructor (batch axis excluded), or None. Internal
        API: ``Sequential`` starts with an Input of this shape."""
        return self._declared_input_shape

    # ---- shape bookkeeping ---------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """Create weights for inputs of ``input_shape`` (batch axis excluded; a list of shapes
        for merge layers)."""

    def compute_output_shape(self, input_shape: Any) -> tuple[int, ...]:
        """Shape of the output for ``input_shape`` (no batch axis). The default runs forward
        on one zero example, so simple custom layers need not override it."""
        probe = np.zeros((1,) + tuple(input_shape), dtype=np.float32)
        return tuple(np.shape(self.forward(probe, training=False))[1:])

    def ensure_built(self, input_shape: Any) -> tuple[int, ...]:
        """Build the layer for ``input_shape`` (without the batch axis) if it is not built yet, and return its
        output shape. A layer that rejects the shape stays unbuilt."""
        input_shape = tuple(input_shape)
        if not self.built:
            # Marked built only once the output shape is known: a layer that rejects its
            # input stays unbuilt and can be called again with a valid one.
            self.build(input_shape)
            self.input_shape = input_shape
            try:
                self.output_shape = tuple(self.compute_output_shape(input_shape))
            except Exception:
                self._unbuild()
                raise
            self.built = True
        else:
            assert self.input_shape is not None, "a built layer knows its input shape"
            if tuple(self.input_shape) != input_shape:
                raise ValueError(f"layer '{self.name}' was built for inputs of shape "
                                 f"{(None,) + tuple(self.input_shape)}, received {(None,) + input_shape}")
        assert self.output_shape is not None, "a built layer knows its output shape"
        return self.output_shape

    def _unbuild(self) -> None:
        """Back to the state before ``build``: no shapes, no weights."""
        self.built = False
        self.input_shape = self.output_shape = None
        for weights in (self.params, self.grads, self.state):
            weights.clear()

    # ---- computation ---------------------------------------------------------------------
    # x and dLdy are arrays, or lists of arrays for merge layers; backward may return None
    # when the layer's input needs no gradient.
    def forward(self, x: Any, training: bool = False) -> Any:
        """The layer's output for the batch ``x``; ``training=True`` in a training step (Dropout drops, BatchNorm
        uses the batch's statistics). Keeps what ``backward`` needs."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dLdy: Any) -> Any:
        """Given the gradient of the loss with respect to the last ``forward``'s output, fill ``self.grads`` and
        return the gradient with respect to its input."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    @overload
    def __call__(self, x: SymbolicTensor | Sequence[SymbolicTensor], training: bool = False) -> SymbolicTensor: ...

    @overload
    def __call__(self, x: npt.ArrayLike | Sequence[npt.ArrayLike], training: bool = False) -> Any: ...

    def __call__(self, x: Any, training: bool = False) -> Any:
        from sparkdl.engine.symbolic import SymbolicTensor, call_symbolic
        if isinstance(x, SymbolicTensor) or (isinstance(x, (list, tuple)) and x
                                             and all(isinstance(t, SymbolicTensor) for t in x)):
            return call_symbolic(self, x)
        if isinstance(x, (list, tuple)):
            self.ensure_built([tuple(np.shape(t)[1:]) for t in x])
        else:
            x = np.asarray(x)
            self.ensure_built(x.shape[1:])
        return self.forward(x, training=training)

    # ---- pickling --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Everything but forward caches: private attributes holding arrays (``_x``, ``_mask``,
        ``_cache = (cols, ...)``) are what forward kept for backward, and are not shipped."""
        def holds_array(v: object) -> bool:
            return isinstance(v, np.ndarray) or (isinstance(v, (tuple, list)) and
                                                 any(isinstance(i, np.ndarray) for i in v))
        return {k: (None if k.startswith("_") and holds_array(v) else v)
                for k, v in self.__dict__.items()}

    # ---- config --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild the layer (``from_config``), as JSON-plain values; saved with
        the model."""
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable}
        if self._declared_input_shape is not None:
            config["input_shape"] = list(self._declared_input_shape)
        return config

    @classmethod
    def from_config(cls: type[_L], config: dict[str, Any]) -> _L:
        """A new layer of this class from a ``get_config`` dict."""
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"


class ActivatedLayer(Layer):
    """A layer computing ``activation(linear(x))``.

    Subclasses implement ``_linear_forward`` and ``_linear_backward``. The split lets a model
    fuse a softmax/sigmoid output with its cross-entropy loss: it calls ``forward_logits`` and
    ``backward_logits`` and the loss works on the logits, which is exact and stable.

    ``activation`` is a name, a config, an ``ActivationFn``, a function with a ``derivative``
    (the protocol of ``sparkdl.engine.activations``), or a Layer instance without weights or
    randomness (``LeakyReLU(0.2)``, a user layer), applied to the linear part's output with its
    own forward and backward passes.
    """

    def __init__(self, activation: ActivationLike = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation: activations.ActivationFn | Layer = _activation(activation, type(self).__name__)
        self._y: np.ndarray | None = None
        self._z: np.ndarray | None = None   # the pre-activation, kept when the activation needs_input

    def _linear_forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _linear_backward(self, dLdz: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def ensure_built(self, input_shape: Any) -> tuple[int, ...]:
        was_built = self.built
        output_shape = super().ensure_built(input_shape)
        if not was_built and isinstance(self.activation, Layer):
            try:
                self._build_activation_layer(self.activation, output_shape)
            except Exception:
                self._unbuild()
                raise
        return output_shape

    def _build_activation_layer(self, layer: Layer, shape: tuple[int, ...]) -> None:
        who = f"{type(self).__name__} '{self.name}'"
        out = layer.ensure_built(shape)
        if layer.weights:
            raise ValueError(f"{who}: expected an activation layer without weights, received "
                             f"{layer!r} with weights {list(layer.params) + list(layer.state)} "
                             f"(add it to the model as a layer of its own)")
        if tuple(out) != tuple(shape):
            raise ValueError(f"{who}: expected an activation layer that keeps the shape "
                             f"{(None,) + tuple(shape)}, received {layer!r} giving {(None,) + tuple(out)}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        z = self._linear_forward(x, training)
        act = self.activation
        if isinstance(act, Layer):
            return act.forward(z, training)
        # In place on z, which this layer owns, unless the derivative reads z.
        y = act.forward(z) if act.needs_input else act.forward(z, out=z)
        if training:
            self._y, self._z = y, (z if act.needs_input else None)
        return y

    def backward(self, dLdy: np.ndarray) -> np.ndarray | None:
        act = self.activation
        if isinstance(act, Layer):
            return self._linear_backward(act.backward(dLdy))
        # _y is None without a training forward pass; a linear activation's derivative does
        # not read it.
        return self._linear_backward(activations.backward(act, dLdy, self._y, self._z))  # type: ignore[arg-type]

    def forward_logits(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The layer's output before its activation (the logits), for a loss computed from them."""
        return self._linear_forward(x, training)

    def backward_logits(self, dLdz: np.ndarray) -> np.ndarray | None:
        """``backward`` from the gradient with respect to the logits (the activation is skipped); returns the
        gradient with respect to the input."""
        return self._linear_backward(dLdz)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        act = self.activation
        if isinstance(act, Layer):
            # Without its auto-numbered name: two equal layers have equal configs (checkpoints
            # compare them).
            act_config = {k: v for k, v in act.get_config().items() if k != "name"}
            config["activation"] = {"class_name": custom_objects.get_registered_name(type(act)),
                                    "config": act_config}
        else:
            config["activation"] = activations.serialize(act)
        return config


def _activation(spec: ActivationLike, who: str) -> activations.ActivationFn | Layer:
    """``activation=`` resolved: a Layer (given, or from its ``{"class_name", "config"}``
    document) or an ActivationFn (``activations.get``)."""
    if isinstance(spec, Mapping) and "class_name" in spec:
        name = spec["class_name"]
        cls = custom_objects.get_registered_object(name)
        if cls is None:
            from sparkdl.engine import layers as layers_mod
            cls = layers_mod.builtin(name)
        if isinstance(cls, type) and issubclass(cls, Layer):
            spec = cls.from_config(dict(spec.get("config") or {}))
    if isinstance(spec, Layer):
        if spec.stochastic:
            raise ValueError(f"{who}: expected an activation layer without randomness, received "
                             f"{spec!r} (add it to the model as a layer of its own)")
        return spec
    return activations.get(spec)
