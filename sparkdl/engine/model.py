"""The Model base class: flat weights, compile, and the single-process training loop.

Subclasses (Sequential, the functional Model) say how layers connect by implementing
``_forward`` / ``_backward`` over a list of input arrays; everything else — packing the
weights into one flat buffer, fused softmax/sigmoid cross-entropy, fit / evaluate / predict,
callbacks, progress, save — lives here once.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from sparkdl.engine import activations as activations_mod
from sparkdl.engine import checks
from sparkdl.engine import losses as losses_mod
from sparkdl.engine import metrics as metrics_mod
from sparkdl.engine import optimizers as optimizers_mod
from sparkdl.engine import scores as scores_mod
from sparkdl.engine import threads
from sparkdl.engine.callbacks import History
from sparkdl.engine.data_adapter import batches, check_lengths, to_input_list
from sparkdl.engine.functional import Graph
from sparkdl.engine.params import FlatBuffer
from sparkdl.engine.scores import Scores
from sparkdl.engine.training import BatchPlan, FitLoop, check_dashboard, live_dashboard
# The errors are defined in sparkdl.errors and stay importable from here.
from sparkdl.errors import NotCompiledError, TrainingDivergedError

if TYPE_CHECKING:
    from typing import Concatenate

    from sparkdl.engine.callbacks import Callback
    from sparkdl.engine.layers.base import Layer
    from sparkdl.engine.progress import ProgressBar
    from sparkdl.engine.symbolic import SymbolicTensors

logger = logging.getLogger("sparkdl")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_M = TypeVar("_M", bound="Model")

#: A metric as ``compile`` takes it: a name, a config dict or a Metric.
MetricLike = str | dict[str, Any] | metrics_mod.Metric


def _engine_threads(method: Callable[Concatenate[_M, _P], _R]) -> Callable[Concatenate[_M, _P], _R]:
    """Run a public compute method under the model's BLAS threading (``Model._threading``)."""
    @functools.wraps(method)
    def wrapper(self: _M, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._threading():
            return method(self, *args, **kwargs)
    return wrapper


class Model:
    """A model over a graph of layers: ``Model(inputs=[a, b], outputs=out)`` with symbolic
    tensors from ``Input(...)`` and layer calls. ``Sequential`` is the special case of a chain."""

    #: The URL of the last ``fit``'s live dashboard (``fit(..., dashboard=True)``), else None.
    dashboard_url: str | None = None

    def __init__(self, inputs: SymbolicTensors | None = None, outputs: SymbolicTensors | None = None,
                 name: str | None = None):
        self.name = name or ("model" if type(self) is Model else type(self).__name__.lower())
        self.optimizer: optimizers_mod.Optimizer | None = None
        self.loss: losses_mod.Loss | None = None
        self.metrics: list[metrics_mod.Metric] = []
        self.stop_training = False
        self.history: History | None = None
        self._params: FlatBuffer | None = None
        self._state: FlatBuffer | None = None
        self._fused = False
        self._graph: Graph | None = None
        if type(self) is Model or inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError("Model: expected both inputs and outputs (symbolic tensors from "
                                 "Input(...) and layer calls), received "
                                 f"inputs={inputs!r}, outputs={outputs!r}")
            self._graph = Graph(inputs, outputs, who=f"Model '{self.name}'")
            self._pack()

    # ---- pickling (cloudpickle ships models to Spark executors) ---------------------------
    def __getstate__(self) -> dict[str, Any]:
        # The flat buffers are rebuilt on arrival: pickled views would no longer share memory
        # with their vector.
        state = self.__dict__.copy()
        state["_params"] = state["_state"] = None
        state["_was_built"] = self.built
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        was_built = state.pop("_was_built", False)
        self.__dict__.update(state)
        if was_built:
            self._pack()

    # ---- graph hooks (Sequential overrides them with a plain chain) -------------------------
    @property
    def built(self) -> bool:
        """True once the model's weights exist (its input shape is known)."""
        return self._params is not None

    @property
    def layers(self) -> list[Layer]:
        """The model's layers, in the order they run."""
        return self._all_layers()

    def _functional_graph(self) -> Graph:
        assert self._graph is not None, "a Model made from inputs and outputs has a graph"
        return self._graph

    def _all_layers(self) -> list[Layer]:
        """Every layer with weights or behaviour, in execution order."""
        return self._functional_graph().layers

    def input_specs(self) -> list[tuple[tuple[int, ...], str]]:
        """``(shape without batch axis, dtype)`` per model input. Internal API: the Spark layer
        (``sparkdl.spark.frames``, ``SparkModel``) converts DataFrame columns to these."""
        return self._input_specs()

    def _input_specs(self) -> list[tuple[tuple[int, ...], str]]:
        return [(t.shape, t.dtype) for t in self._functional_graph().inputs]

    def _output_layer(self) -> Layer:
        return self._functional_graph().output.layer

    def _forward(self, xs: list[np.ndarray], training: bool, logits: bool = False) -> np.ndarray:
        return self._functional_graph().forward(xs, training, logits)

    def _backward(self, dLdy: np.ndarray, logits: bool = False,
                  done: Callable[[Layer], None] | None = None) -> None:
        self._functional_graph().backward(dLdy, logits, done)

    def _build_from_data(self, xs: npt.ArrayLike | None) -> None:
        raise ValueError(f"model '{self.name}' is not built: give the first layer an input_shape "
                         f"or start with Input(shape)")

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output shape without the batch axis, once the model is built (None before)."""
        return self._output_layer().output_shape  # type: ignore[return-value]

    def _threading(self) -> contextlib.AbstractContextManager[Any]:
        """Layers with their own compute threads (conv, pooling) run BLAS single-threaded under
        them; set once for a whole call, as switching OpenBLAS's thread count between layers is
        slow. Other models leave BLAS at the thread budget (sparkdl.engine.threads)."""
        if any(layer.own_threads for layer in self._all_layers()):
            return threads.blas_limit(1)
        return contextlib.nullcontext()

    # ---- flat weights ---------------------------------------------------------------------
    def _pack(self) -> None:
        """Move every layer's arrays into the model's two flat buffers.

        Trainable parameters with row-sparse gradients (embeddings) go after all the dense
        ones, so a step updates ``[:dense_size]`` densely and only the touched rows beyond.
        Public lists (``trainable_weights``, ``compute_gradients``) keep the layer order, as
        ``get_weights`` does: ``_layer_order[i]`` is the buffer slot of their ``i``-th array."""
        dense: list[tuple[Layer, str]] = []
        sparse: list[tuple[Layer, str]] = []
        state_slots: list[tuple[dict[str, np.ndarray], str]] = []
        in_layer_order = []    # (is sparse, index in its group) per trainable parameter
        for layer in self._all_layers():
            if layer.trainable:
                sparse_keys = getattr(layer, "sparse_params", ())
                for key in layer.params:
                    group = sparse if key in sparse_keys else dense
                    group.append((layer, key))
                    in_layer_order.append((group is sparse, len(group) - 1))
            else:
                state_slots += [(layer.params, key) for key in layer.params]
            state_slots += [(layer.state, key) for key in layer.state]
        self._layer_order = [len(dense) + i if is_sparse else i for is_sparse, i in in_layer_order]
        ordered = dense + sparse
        # the buffer slots of each layer with trainable weights, in layer order (backward hook)
        self._layer_slots: dict[int, list[int]] = {}
        for i, (layer, _) in enumerate(ordered):
            self._layer_slots.setdefault(id(layer), []).append(i)
        self._params = FlatBuffer([(layer.params, key) for layer, key in ordered],
                                  [layer.grads for layer, _ in ordered])
        self._state = FlatBuffer(state_slots)
        self._dense_size = int(self._params.offsets[len(dense)])
        # Layers with sparse_params (Embedding) record the rows a backward touched.
        self._sparse_slots: list[tuple[Any, str, int, int]] = [
            (layer, key, int(self._params.offsets[len(dense) + i]),
             int(np.prod(self._params.shapes[len(dense) + i][1:])))
            for i, (layer, key) in enumerate(sparse)]
        self._update_fusion()

    def _sparse_index(self) -> np.ndarray:
        """Flat indices of the parameter elements in the rows the last backward touched."""
        parts = []
        for layer, key, offset, row_size in self._sparse_slots:
            rows = layer.touched_rows[key]
            parts.append((offset + rows[:, None] * row_size + np.arange(row_size)).reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _apply_gradients(self) -> None:
        assert self.optimizer is not None and self._params is not None and self._params.grads is not None, \
            "callers check that the model is compiled and built"
        if self._sparse_slots:
            self.optimizer.apply(self._params.values, self._params.grads,
                                 dense_size=self._dense_size, sparse_index=self._sparse_index())
        else:
            self.optimizer.apply(self._params.values, self._params.grads)

    @property
    def dense_size(self) -> int:
        """Elements of ``flat_weights`` before the row-sparse tables (embeddings), which fill
        the rest of it. Internal API: ``sparkdl.distributed.sparse`` maps the vector with it."""
        self._buffers("dense_size")
        return self._dense_size

    def row_tables(self) -> list[tuple[Layer, str, int]]:
        """``(layer, key, offset in flat_weights)`` of each row-sparse table (an Embedding's
        ``embeddings``), in the flat buffer's order. Internal API, as ``dense_size``."""
        self._buffers("row_tables")
        return [(layer, key, offset) for layer, key, offset, _ in self._sparse_slots]

    def feeding_input(self, layer: Layer) -> int | None:
        """The index of the model input that ``layer`` reads directly, or None when it reads
        another layer's output. Internal API: row-sparse traffic reads a table's ids there."""
        graph = self._functional_graph()
        for node in graph.compute_nodes:
            if node.layer is layer and len(node.inputs) == 1:
                return next((i for i, t in enumerate(graph.inputs) if t is node.inputs[0]), None)
        return None

    def input_consumers(self, index: int) -> list[Layer]:
        """The layers that read model input ``index`` directly. Internal API, as
        ``feeding_input``."""
        graph = self._functional_graph()
        return [node.layer for node in graph.compute_nodes if any(t is graph.inputs[index] for t in node.inputs)]

    def require_built(self, who: str) -> None:
        """Raise ValueError, starting with ``who``, unless the model is built. Internal API for
        code that needs the weights (``sparkdl.engine.serialization``)."""
        if not self.built:
            raise ValueError(f"{who}: model '{self.name}' is not built yet; give the first layer an "
                             f"input_shape, start with Input(shape), or call fit/predict on data first")

    def _buffers(self, who: str) -> tuple[FlatBuffer, FlatBuffer]:
        """The flat buffers (trainable parameters, state), after ``require_built(who)``."""
        self.require_built(who)
        assert self._params is not None and self._state is not None, "a built model has both"
        return self._params, self._state

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """The trainable arrays (live views into ``flat_weights``) in layer order, as in
        ``get_weights``; the order of ``compute_gradients``."""
        params, _ = self._buffers("trainable_weights")
        views = params.arrays()
        return [views[i] for i in self._layer_order]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """The non-trainable weights (such as BatchNorm's moving statistics), as arrays that share the model's
        memory."""
        _, state = self._buffers("non_trainable_weights")
        return state.arrays()

    @property
    def weights(self) -> list[np.ndarray]:
        """All weights in get_weights order: layer by layer, trainable then non-trainable."""
        self.require_built("weights")
        return [w for layer in self._all_layers() for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the model's weight arrays, trainable and non-trainable, in layer order."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Iterable[npt.ArrayLike]) -> None:
        """Set the model's weights from arrays in ``get_weights``' order. The count and every shape are checked
        first; on a mismatch nothing is written."""
        targets = self.weights
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: model '{self.name}' expects {len(targets)} arrays, "
                             f"received {len(weights)}")
        for i, (t, w) in enumerate(zip(targets, weights)):
            w = np.asarray(w)
            if w.shape != t.shape:
                raise ValueError(f"set_weights: array {i} should have shape {t.shape}, received {w.shape}")
        for t, w in zip(targets, weights):
            t[...] = w

    def get_flat_weights(self) -> npt.NDArray[np.float32]:
        """A copy of the trainable parameters as one float32 vector, in the flat buffer's order:
        layer order, except that embedding tables come after all other parameters."""
        params, _ = self._buffers("get_flat_weights")
        return params.values.copy()

    def set_flat_weights(self, vector: npt.ArrayLike) -> None:
        """Set the trainable weights from one flat float32 vector (the layout the distributed modes exchange)."""
        params, _ = self._buffers("set_flat_weights")
        params.set_flat(vector)

    @property
    def flat_weights(self) -> npt.NDArray[np.float32]:
        """The live flat parameter vector (writes change the model)."""
        params, _ = self._buffers("flat_weights")
        return params.values

    def relocate_weights(self, values: np.ndarray, copy: bool = True) -> None:
        """Move the trainable parameters into ``values`` (a float32 vector of
        ``flat_weights.size``, e.g. a memory-mapped file; ``copy=False`` when it holds them
        already), which ``flat_weights`` then is. Internal API: a sharded fit keeps the
        driver's weights in a file while it runs (``sparkdl.distributed.mapped``)."""
        params, _ = self._buffers("relocate_weights")
        params.relocate(values, copy)

    @property
    def flat_gradients(self) -> npt.NDArray[np.float32]:
        """The live flat gradient vector, aligned with ``flat_weights``, as the last
        ``loss_and_backward`` left it. Internal API: distributed workers
        (``sparkdl.distributed.worker``) add it into their gradient sums without a copy."""
        params, _ = self._buffers("flat_gradients")
        assert params.grads is not None, "the trainable buffer has gradients"
        return params.grads

    @property
    def flat_state(self) -> npt.NDArray[np.float32]:
        """The live flat vector of non-trainable weights (moving statistics)."""
        _, state = self._buffers("flat_state")
        return state.values

    def count_params(self) -> int:
        """The number of scalars in the model's weights, trainable and non-trainable."""
        params, state = self._buffers("count_params")
        return params.size + state.size

    # ---- compile --------------------------------------------------------------------------
    def compile(self, optimizer: str | dict[str, Any] | optimizers_mod.Optimizer = "rmsprop",
                loss: str | dict[str, Any] | losses_mod.Loss | None = None,
                metrics: MetricLike | Sequence[MetricLike] | None = None) -> None:
        """Set the optimizer, the loss and the metrics, each a name, a config dict or an instance (Keras' forms).
        A loss is required."""
        if loss is None:
            raise ValueError(f"compile: expected a loss (one of {losses_mod.names()} or a Loss), "
                             f"received loss=None")
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, dict, metrics_mod.Metric)):
            metrics = [metrics]
        self.metrics = [metrics_mod.get(m) for m in metrics]
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"compile: expected distinct metrics, received {names}")
        self._update_fusion()

    def _update_fusion(self) -> None:
        """Use the logits form of the loss when the output layer's activation matches it."""
        self._fused = False
        if self.loss is None or not self.built:
            return
        out = self._output_layer()
        # Built-in activations only: a user's activation named "softmax" has no logits form.
        act = activations_mod.builtin_name(getattr(out, "activation", None))
        self._fused = (self.loss.fusable_activation is not None and act == self.loss.fusable_activation
                       and hasattr(out, "forward_logits"))

    def _require_compiled(self, who: str) -> None:
        if self.loss is None or self.optimizer is None:
            raise NotCompiledError(f"{who}: model '{self.name}' must be compiled first; call "
                                   f"model.compile(optimizer=..., loss=...) before {who}()")

    # ---- one step -------------------------------------------------------------------------
    def loss_and_backward(self, xs: list[np.ndarray], y: np.ndarray,
                          on_ready: Callable[[int, int], None] | None = None) -> tuple[float, np.ndarray]:
        """Forward in training mode, loss, backward into ``flat_gradients``; no step taken.
        Returns ``(loss, outputs)`` where outputs are probabilities (not logits). ``xs, y`` as
        ``check_data`` returns them. Internal API: distributed workers
        (``sparkdl.distributed.worker``) sum gradients at fixed weights with it.

        ``on_ready(start, stop)``, if given, is called as soon as ``flat_gradients[start:stop]``
        is final, while backward goes on with the layers below: a layer's ranges right after
        its backward, the output layer's first; every range of trainable weights once, those
        of layers backward did not reach (nothing below them has weights) at the end."""
        assert self.loss is not None and self.optimizer is not None and self._params is not None, \
            "callers check that the model is compiled and built"
        out = self._forward(xs, training=True, logits=self._fused)
        if self._fused:
            loss, dLdy = self.loss.value_and_grad_logits(y, out)
        else:
            loss, dLdy = self.loss.value_and_grad(y, out)
        if not np.isfinite(loss):
            raise TrainingDivergedError(f"model '{self.name}': the loss became {loss} at optimizer "
                                        f"step {self.optimizer.iterations}; the weights are those "
                                        f"before that step (lower the learning rate?)")
        if on_ready is None:
            self._backward(dLdy, logits=self._fused)
        else:
            self._backward_reporting(dLdy, on_ready)
        self._params.sync_grads()
        if self._fused and self.metrics:
            out = self._output_layer().activation.forward(out.copy())  # type: ignore[attr-defined]
        return loss, out

    def _backward_reporting(self, dLdy: np.ndarray, on_ready: Callable[[int, int], None]) -> None:
        params = self._params
        assert params is not None, "a built model"
        pending = dict(self._layer_slots)

        def report(layer_id: int) -> None:
            slots = pending.pop(layer_id, None)
            if slots:
                params.sync_grads(slots)
                for start, stop in params.ranges(slots):
                    on_ready(start, stop)
        self._backward(dLdy, logits=self._fused, done=lambda layer: report(id(layer)))
        for layer_id in reversed(list(pending)):
            report(layer_id)

    def gradient_ranges(self) -> list[tuple[int, int]]:
        """The ranges of ``flat_gradients`` in the order ``loss_and_backward(on_ready=...)``
        reports them when backward reaches every layer with weights (the output layer's
        first). Internal API: a distributed worker sends its gradients in this order
        (``sparkdl.distributed.exchange``)."""
        params, _ = self._buffers("gradient_ranges")
        return [r for slots in reversed(list(self._layer_slots.values())) for r in params.ranges(slots)]

    def _train_batch(self, xs: list[np.ndarray], y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, out = self.loss_and_backward(xs, y)
        self._apply_gradients()
        return loss, out

    def check_data(self, x: npt.ArrayLike | None, y: npt.ArrayLike | None,
                   who: str) -> tuple[list[np.ndarray], np.ndarray]:
        """``(xs, y)``: ``x`` as a list of arrays, one per model input, and the targets, checked
        against the inputs and the loss (the model is built from ``x`` first if needed); errors
        start with ``who``. Internal API: ``SparkModel`` checks validation arrays with it."""
        assert self.loss is not None, "callers check that the model is compiled"
        if not self.built:
            self._build_from_data(x)
        xs = to_input_list(x, self.input_specs(), who)
        if y is None:
            raise ValueError(f"{who}: expected targets y, received None")
        targets = self.loss.validate_targets(y, self.output_shape)
        check_lengths(xs, targets, who)
        return xs, targets

    @_engine_threads
    def train_on_batch(self, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """One optimizer step on ``(x, y)``; returns the batch loss before the step."""
        self._require_compiled("train_on_batch")
        xs, y = self.check_data(x, y, "train_on_batch")
        loss, _ = self._train_batch(xs, y)
        return loss

    @_engine_threads
    def compute_gradients(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, list[np.ndarray]]:
        """Loss and gradients (copies, aligned with ``trainable_weights``: layer order); no step
        taken."""
        self._require_compiled("compute_gradients")
        xs, targets = self.check_data(x, y, "compute_gradients")
        loss, _ = self.loss_and_backward(xs, targets)
        params, _ = self._buffers("compute_gradients")
        grads = params.grad_arrays()
        return loss, [grads[i].copy() for i in self._layer_order]

    # ---- fit ------------------------------------------------------------------------------
    def reseed(self, seed: int | Sequence[int] | np.random.SeedSequence | None) -> None:
        """Reseed every stochastic layer from ``seed`` (an int or a SeedSequence) so a training
        run is reproducible; layers with their own ``seed`` mix it in."""
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        children = root.spawn(len(self._all_layers()))
        for layer, child in zip(self._all_layers(), children):
            if layer.stochastic:
                own = getattr(layer, "seed", None)
                entropy = child.generate_state(4)
                layer.rng = np.random.default_rng(entropy if own is None else [own, *entropy])

    def reseed_batch(self, layer_seq: np.random.SeedSequence, index: int) -> None:
        """Reseed the stochastic layers for batch ``index`` of a pass: the child ``index`` of
        ``layer_seq``, so a slice of a pass draws what the whole pass would have drawn there."""
        self.reseed(np.random.SeedSequence(layer_seq.entropy,
                                           spawn_key=tuple(layer_seq.spawn_key) + (int(index),)))

    @_engine_threads
    def train_epoch(self, xs: list[np.ndarray], y: np.ndarray, batch_size: int, seed_key: int | Sequence[int],
                    shuffle: bool = True, start: int = 0, stop: int | None = None,
                    on_batch_begin: Callable[[int], object] | None = None,
                    on_batch: Callable[[int, float, float], object] | None = None) -> float:
        """Optimizer steps over batches ``[start, stop)`` of one pass over checked arrays.

        The pass's order and the stochastic layers' randomness come from
        ``SeedSequence(seed_key)`` alone, so any slice of any epoch can be recomputed exactly
        (a retried Spark task does). Metrics accumulate into ``self.metrics`` (reset first).
        Returns the sum over examples of the batch losses.
        """
        return self.train_plan(BatchPlan(len(y), batch_size, seed_key, start, stop, shuffle), xs, y,
                               on_batch_begin, on_batch)

    @_engine_threads
    def train_plan(self, plan: BatchPlan, xs: list[np.ndarray], y: np.ndarray,
                   on_batch_begin: Callable[[int], object] | None = None,
                   on_batch: Callable[[int, float, float], object] | None = None) -> float:
        """``train_epoch`` over the batches of ``plan``. Internal API: a row-sparse worker
        trains a plan over the rows it gathered (``BatchPlan.gathered``)."""
        for m in self.metrics:
            m.reset()
        total, seen = 0.0, 0
        for index, xb, yb in plan.iterate(self, xs, y):
            if on_batch_begin is not None:
                on_batch_begin(index)
            loss, out = self._train_batch(xb, yb)
            total += loss * len(yb)
            seen += len(yb)
            for m in self.metrics:
                m.update(yb, out)
            if on_batch is not None:
                on_batch(index, loss, total / seen)
        return total

    @_engine_threads
    def fit(self, x: npt.ArrayLike | None = None, y: npt.ArrayLike | None = None, batch_size: int = 32,
            epochs: int = 1, verbose: int = 1, callbacks: Sequence[Callback] | None = None,
            validation_split: float = 0.0,
            validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
            shuffle: bool = True, seed: int | None = None, initial_epoch: int = 0,
            dashboard: bool | str = False) -> History:
        """Train for ``epochs`` on ``(x, y)`` (Keras' arguments). ``dashboard=True`` serves a
        live page of the fit on 127.0.0.1 for its length (``"keep"``: until the process ends),
        at the URL logged at INFO and kept in ``model.dashboard_url``."""
        self._require_compiled("fit")
        board = check_dashboard(dashboard, "fit")
        batch_size = checks.integer(batch_size, "batch_size", "fit", at_least=1)
        epochs = checks.integer(epochs, "epochs", "fit", at_least=0)
        if not 0 <= validation_split < 1:
            raise ValueError(f"fit: expected 0 <= validation_split < 1, received {validation_split!r}")
        xs, y = self.check_data(x, y, "fit")
        if validation_data is not None and validation_split:
            raise ValueError("fit: give validation_data or validation_split, not both")
        val: tuple[list[np.ndarray], np.ndarray] | None = None
        if validation_split:
            cut = int(len(y) * (1 - validation_split))
            val = ([a[cut:] for a in xs], y[cut:])
            xs, y = [a[:cut] for a in xs], y[:cut]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: expected validation_data=(x_val, y_val)")
            val = self.check_data(*validation_data, "fit(validation_data)")
        n = len(y)
        if n == 0:
            raise ValueError("fit: expected at least one training example, received 0")

        # Every epoch draws its shuffle and dropout masks from (seed, epoch, 0): a worker that
        # trains partition p in round e draws from (seed, e, p), so one-worker distributed
        # training repeats this loop exactly.
        base_seed = int(seed) if seed is not None else \
            int(cast(int, np.random.SeedSequence().entropy) % 2**63)  # a fresh sequence's entropy is an int
        steps = -(-n // batch_size)
        with live_dashboard(board, "Model.fit", self) as feed:
            loop = FitLoop(self, callbacks, epochs, steps, batch_size, verbose, feed=feed)
            self.history = loop.history
            if feed is not None:
                feed.begin(who="Model.fit", model=self.name, unit="batch", epochs=epochs,
                           points_total=max(epochs - initial_epoch, 0) * steps, points_per_epoch=steps,
                           batch_size=batch_size, rows=n)
            return loop.run(lambda: initial_epoch, self._fit_epoch(loop, feed, xs, y, val, batch_size,
                                                                   base_seed, shuffle))

    def _fit_epoch(self, loop: FitLoop, feed: Any, xs: list[np.ndarray], y: np.ndarray,
                   val: tuple[list[np.ndarray], np.ndarray] | None, batch_size: int, base_seed: int,
                   shuffle: bool) -> Callable[[int, ProgressBar], dict[str, float]]:
        """``fit``'s ``run_epoch``: one pass over ``(xs, y)``, then validation."""
        n = len(y)

        def run_epoch(epoch: int, bar: ProgressBar) -> dict[str, float]:
            cbs = loop.callbacks

            def on_batch(step: int, loss: float, mean_loss: float) -> None:
                cbs.on_batch_end(step, {"loss": loss})
                bar.update(step + 1, {"loss": mean_loss})
                if feed is not None:
                    feed.point(epoch=epoch + 1, step=step + 1, loss=float(loss))

            total = self.train_epoch(xs, y, batch_size, (base_seed, epoch, 0), shuffle=shuffle,
                                     on_batch_begin=cbs.on_batch_begin, on_batch=on_batch)
            logs = {"loss": total / n}
            logs.update({m.name: m.result() for m in self.metrics})
            if val is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate_arrays(*val, batch_size=256).items()})
            return logs

        return run_epoch

    # ---- inference ------------------------------------------------------------------------
    def predict_arrays(self, xs: list[np.ndarray], batch_size: int) -> npt.NDArray[np.float32]:
        """``predict`` on a list of input arrays already checked (``check_data``,
        ``data_adapter.to_input_list``). Internal API: the executors' prediction and validation
        (``sparkdl.distributed.fit_task``)."""
        n = len(xs[0])
        out = np.empty((n,) + tuple(self.output_shape), dtype=np.float32)
        for a, b in batches(n, batch_size):
            out[a:b] = self._forward([x[a:b] for x in xs], training=False)
        return out

    def _logits_layer(self) -> Layer | None:
        """The output layer when it ends with a softmax or sigmoid it can leave out (the
        activations a cross-entropy fuses with), else None."""
        out = self._output_layer()
        act = getattr(getattr(out, "activation", None), "name", None)
        # The activations the cross-entropies fuse with (Loss.fusable_activation).
        return out if act in ("softmax", "sigmoid") and hasattr(out, "forward_logits") else None

    @_engine_threads
    def logits_and_outputs(self, xs: list[np.ndarray], batch_size: int
                           ) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.float32]]:
        """``(logits, outputs)`` of checked inputs (as ``predict_arrays`` takes them) from one
        forward pass in inference mode: the logits are the values the output layer's softmax
        or sigmoid is applied to, and None when the output layer has neither. Internal API:
        the pyspark.ml classifiers' ``rawPrediction`` (``sparkdl.spark.frames``)."""
        layer = self._logits_layer()
        if layer is None:
            return None, self.predict_arrays(xs, batch_size)
        n = len(xs[0])
        logits = np.empty((n,) + tuple(self.output_shape), dtype=np.float32)
        outputs = np.empty_like(logits)
        activation = layer.activation  # type: ignore[attr-defined]  # _logits_layer checked it
        for a, b in batches(n, batch_size):
            logits[a:b] = self._forward([x[a:b] for x in xs], training=False, logits=True)
            activation.forward(logits[a:b], out=outputs[a:b])
        return logits, outputs

    @_engine_threads
    def predict(self, x: npt.ArrayLike, batch_size: int = 256, verbose: int = 0) -> npt.NDArray[np.float32]:
        """The model's output for ``x`` (an array, or a list of arrays for several inputs), computed
        ``batch_size`` rows at a time."""
        batch_size = checks.integer(batch_size, "batch_size", "predict", at_least=1)
        if not self.built:
            self._build_from_data(x)
        xs = to_input_list(x, self.input_specs(), "predict")
        return self.predict_arrays(xs, batch_size)

    def evaluate_arrays(self, xs: list[np.ndarray], y: np.ndarray, batch_size: int) -> dict[str, float]:
        """``evaluate`` on arrays already checked by ``check_data``. Internal API: ``SparkModel``
        evaluates validation arrays on the driver with it."""
        assert self.loss is not None, "callers check that the model is compiled"
        metrics = [m.fresh() for m in self.metrics]
        total = 0.0
        for a, b in batches(len(y), batch_size):
            out = self._forward([x[a:b] for x in xs], training=False)
            total += float(np.sum(self.loss.per_sample(y[a:b], out)))
            for m in metrics:
                m.update(y[a:b], out)
        result = {"loss": total / len(y) if len(y) else float("nan")}
        result.update({m.name: m.result() for m in metrics})
        return result

    @overload
    def evaluate(self, x: npt.ArrayLike | None = ..., y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., return_dict: None = ...) -> Scores: ...

    @overload
    def evaluate(self, x: npt.ArrayLike | None = ..., y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., *, return_dict: Literal[True]) -> dict[str, float]: ...

    @overload
    def evaluate(self, x: npt.ArrayLike | None = ..., y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., *, return_dict: Literal[False]) -> list[float] | float: ...

    def evaluate(self, x: npt.ArrayLike | None = None, y: npt.ArrayLike | None = None, batch_size: int = 256,
                 verbose: int = 0, return_dict: bool | None = None
                 ) -> Scores | dict[str, float] | list[float] | float:
        """Loss and compiled metrics over ``(x, y)`` in inference mode: a ``Scores`` dict
        (``{"loss": ..., "accuracy": ...}``) that also reads by position as Keras' list
        (``[0]`` the loss, ``[1]`` the first compiled metric). ``return_dict=True``: a plain
        dict; ``False``: Keras' list of floats (the loss alone without metrics). ``verbose``
        is accepted for Keras' signature; evaluation shows no progress."""
        self._require_compiled("evaluate")
        batch_size = checks.integer(batch_size, "batch_size", "evaluate", at_least=1)
        return_dict = scores_mod.check_return_dict(return_dict, "evaluate")
        xs, y = self.check_data(x, y, "evaluate")
        with self._threading():       # as _engine_threads does (it would hide the overloads)
            scores = self.evaluate_arrays(xs, y, batch_size)
        return scores_mod.returned(scores, return_dict)

    # ---- description and persistence ---------------------------------------------------------
    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts (returned, not printed)."""
        rows = [(f"{layer.name} ({type(layer).__name__})",
                 str((None,) + tuple(layer.output_shape)) if layer.output_shape is not None else "?",
                 str(layer.count_params())) for layer in self._all_layers()]
        head = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(r[i]) for r in rows + [head]) + 2 for i in range(3)]
        line = lambda r: "".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        rule = "-" * sum(widths)
        out = [f'Model: "{self.name}"', rule, line(head), "=" * sum(widths)]
        out += [line(r) for r in rows]
        out.append("=" * sum(widths))
        if self._params is not None and self._state is not None:
            out += [f"Total params: {self.count_params():,}",
                    f"Trainable params: {self._params.size:,}",
                    f"Non-trainable params: {self._state.size:,}"]
        return "\n".join(out)

    def get_config(self) -> dict[str, Any]:
        """The model's architecture as a JSON-plain dict (its layers and how they connect); ``from_config``
        rebuilds it without weights."""
        return {"name": self.name, **self._functional_graph().get_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Model:
        """A new model from a ``get_config`` dict; ``custom_objects`` names user layers and functions."""
        inputs, output = Graph.from_config(config, custom_objects)
        return Model(inputs=inputs, outputs=output, name=config.get("name"))

    def to_json(self, **kwargs: Any) -> str:
        """The architecture as a JSON string, without weights or compile settings (Keras'
        ``to_json``; ``kwargs`` go to ``json.dumps``): ``sparkdl.models.model_from_json``
        rebuilds it."""
        from sparkdl.engine.serialization import model_to_json
        return model_to_json(self, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write architecture (JSON), weights and optimizer state (``.npz``) to ``path``: a
        single zip file, or a directory when ``path`` is an existing directory."""
        from sparkdl.engine.serialization import save_model
        save_model(self, path)

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the weights alone to ``path`` (an ``.npz`` file); ``load_weights`` reads them back into a model
        of the same architecture."""
        from sparkdl.engine.serialization import save_weights
        save_weights(self, path)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Read weights that ``save_weights`` wrote into this model; the arrays must match its weights in number
        and shape."""
        from sparkdl.engine.serialization import load_weights
        load_weights(self, path)
