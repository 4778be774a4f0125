"""Optimizers over the model's flat parameter vector (Keras names, defaults and update rules).

``apply(params, grads)`` updates the whole model in place with a handful of vectorised NumPy
calls; slot variables (momentum, moments, accumulators) are flat float32 vectors of the same
size, so optimizer state checkpoints and ships like the weights do. Hyperparameters are
declared on the class with their bounds (``Hyperparameter``) and checked on every assignment:
in the constructor, in ``apply_config`` and by a user's ``opt.momentum = 0.9``.

Keras 2 spellings are accepted: ``lr=`` for ``learning_rate=`` (with a DeprecationWarning),
and ``decay=``, Keras 2's inverse-time decay: a step uses ``learning_rate / (1 + decay *
iterations)`` (``current_learning_rate``), iterations counting the steps before it. A decay
and a learning-rate schedule exclude each other.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkdl.engine import checks, custom_objects, schedules
from sparkdl.engine.schedules import LearningRateSchedule

# A slot entry whose gradient stays exactly zero (a dead unit, an always-blank pixel) decays
# geometrically under momentum and reaches float32 subnormals, which make every vector
# operation on the slot ~25x slower on x86. Zeroing magnitudes below _TINY every _FLUSH_EVERY
# steps keeps them out of the subnormal range (1e-30 * 0.9**100 is still normal) at a
# negligible cost and with no visible effect on the update.
_TINY = np.float32(1e-30)
_FLUSH_EVERY = 100


class Hyperparameter:
    """A hyperparameter of an optimizer class: a finite float within bounds (``>= 0`` unless
    told), or with ``flag=True`` a bool. Its rule runs on every assignment, as pyspark runs a
    Param's type converter on every set, so no path can store a value the constructor would
    refuse; a change that adds or drops a slot is picked up by the next ``build``."""

    def __init__(self, flag: bool = False, at_least: float | None = 0.0, below: float | None = None):
        self.flag, self.at_least, self.below = flag, at_least, below

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # No __get__: a read finds the value in the instance's __dict__ at the speed of a plain
    # attribute (update rules read these every step); only assignment runs the rule. Type
    # checkers are told what a read gives.
    if TYPE_CHECKING:
        def __get__(self, opt: object, owner: type | None = None) -> float: ...

    def __set__(self, opt: Optimizer, value: float) -> None:
        opt.__dict__[self.name] = self.check(opt, value)

    def check(self, opt: Optimizer, value: float) -> float:
        """``value`` as ``opt`` stores it, or the error saying why not."""
        return bool(value) if self.flag else checks.number(
            value, self.name, type(opt).__name__, at_least=self.at_least, below=self.below)


class _Decay(Hyperparameter):
    """Keras 2's ``decay`` (>= 0), which a learning-rate schedule excludes."""

    def check(self, opt: Optimizer, value: float) -> float:
        decay = super().check(opt, value)
        if decay and callable(opt.__dict__.get("_learning_rate")):
            raise _decay_with_schedule(opt, decay, opt.__dict__["_learning_rate"])
        return decay


def _decay_with_schedule(opt: Optimizer, decay: float, schedule: object) -> ValueError:
    return ValueError(f"{type(opt).__name__}: expected decay=0 with a learning-rate schedule (the "
                      f"schedule sets every step's rate), received decay={decay!r} and "
                      f"learning_rate={schedule!r}")


def _keras2_learning_rate(cls: type[Optimizer], learning_rate: float | LearningRateSchedule | None,
                          lr: float | None) -> float | LearningRateSchedule:
    """The learning rate from ``learning_rate`` or Keras 2's ``lr`` (deprecated), at most one of
    them; the class's default when neither is given."""
    if lr is None:
        return cls.default_learning_rate if learning_rate is None else learning_rate
    if learning_rate is not None:
        raise TypeError(f"{cls.__name__}: expected learning_rate or its Keras 2 alias lr, not both; "
                        f"received learning_rate={learning_rate!r} and lr={lr!r}")
    warnings.warn(f"{cls.__name__}: lr is deprecated; use learning_rate", DeprecationWarning, stacklevel=4)
    return lr


class Optimizer:
    """Base class of the optimizers: the learning rate (a number or a schedule), Keras 2's ``decay`` and the
    slots (per-weight state such as momentum) over the flat vector of trainable weights."""
    name = "optimizer"
    slot_names: tuple[str, ...] = ()
    #: The learning rate when none is given (each optimizer's Keras default).
    default_learning_rate = 0.01
    #: Keras 2's inverse-time decay: a step uses ``learning_rate / (1 + decay * iterations)``.
    decay = _Decay()

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None, *,
                 decay: float = 0.0, lr: float | None = None):
        self.learning_rate = _keras2_learning_rate(type(self), learning_rate, lr)
        self.decay = decay
        self.iterations = 0
        self.slots: dict[str, np.ndarray] = {}
        self._tmp: np.ndarray | None = None

    # learning_rate reads as the current float value (before decay) and accepts a float or a
    # schedule.
    @property
    def learning_rate(self) -> float:
        """The learning rate of the next step (a schedule is evaluated at ``iterations``). Set it to a number, a
        ``LearningRateSchedule`` or a function of the step; a bad value raises and keeps the old rate."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value: float | LearningRateSchedule | Callable[[int], float]) -> None:
        self._learning_rate: float | Callable[[int], float]
        if isinstance(value, LearningRateSchedule) or callable(value):
            decay = self.__dict__.get("decay", 0.0)
            if decay:
                raise _decay_with_schedule(self, decay, value)
            self._learning_rate = value
        else:
            self._learning_rate = checks.number(value, "learning_rate", type(self).__name__, at_least=0)

    @property
    def current_learning_rate(self) -> float:
        """The rate the next step applies: ``learning_rate``, divided by ``1 + decay *
        iterations`` when ``decay`` is set."""
        lr = self.learning_rate
        return lr / (1.0 + self.decay * self.iterations) if self.decay else lr

    @property
    def lr(self) -> float:
        """Keras 2's name of ``learning_rate`` (deprecated)."""
        warnings.warn(f"{type(self).__name__}.lr is deprecated; use learning_rate",
                      DeprecationWarning, stacklevel=2)
        return self.learning_rate

    @lr.setter
    def lr(self, value: float | LearningRateSchedule) -> None:
        warnings.warn(f"{type(self).__name__}.lr is deprecated; use learning_rate",
                      DeprecationWarning, stacklevel=2)
        self.learning_rate = value

    def build(self, size: int) -> None:
        """Allocate slot vectors for a parameter vector of ``size`` elements. Idempotent and
        cheap, as it runs before every step; after a hyperparameter change that adds or drops
        a slot (SGD's momentum from 0 to 0.9) it allocates the new slot and keeps the others."""
        if self._tmp is None or self._tmp.size != size:
            self.slots, self._tmp = {}, np.empty(size, dtype=np.float32)
        names = tuple(self.slot_names)
        if tuple(self.slots) != names:
            self.slots = {name: self.slots[name] if name in self.slots else self._initial_slot(name, size)
                          for name in names}

    def reset_slots(self) -> None:
        """Drop the slots and scratch space, as before the first step: the next ``build`` (or
        step) allocates them afresh. Internal API: a checkpoint restores an optimizer saved
        before its first step with it (``sparkdl.distributed.checkpoint``)."""
        self.slots = {}
        self._tmp = None

    def _initial_slot(self, name: str, size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.float32)

    def reset_elements(self, start: int, stop: int) -> None:
        """Set the slots of parameters ``[start, stop)`` to their values before any step.
        Internal API: a row-sparse worker's rows hold other ids after each pull, whose history
        it does not keep (``sparkdl.distributed.sparse_worker``)."""
        for name, slot in self.slots.items():
            slot[start:stop] = self._initial_slot(name, stop - start)

    def apply(self, params: np.ndarray, grads: np.ndarray, dense_size: int | None = None,
              sparse_index: np.ndarray | None = None) -> None:
        """One update of the flat ``params`` from the flat ``grads``, in place.

        With ``dense_size``, only ``params[:dense_size]`` is updated densely; the elements at
        ``sparse_index`` (all >= dense_size: the rows of embeddings a batch used) are
        gathered, updated with their slots, and scattered back. The rest keep their values
        and optimizer state, as in Keras' sparse updates.
        """
        self.build(params.size)
        tmp = self._tmp
        assert tmp is not None, "build() allocates the scratch vector"
        lr = np.float32(self.current_learning_rate)
        if dense_size is None:
            self._update(params, grads, lr, self.slots, tmp)
        else:
            d = dense_size
            self._update(params[:d], grads[:d], lr, {k: s[:d] for k, s in self.slots.items()},
                         tmp[:d])
            if sparse_index is not None and len(sparse_index):
                idx = sparse_index
                p, slots = params[idx], {k: s[idx] for k, s in self.slots.items()}
                self._update(p, grads[idx], lr, slots, np.empty_like(p))
                params[idx] = p
                for k, s in slots.items():
                    self.slots[k][idx] = s
        self.iterations += 1
        if self.iterations % _FLUSH_EVERY == 0:
            for slot in self.slots.values():
                np.putmask(slot, np.abs(slot) < _TINY, 0)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        """The update rule on aligned arrays (params, grads, slot arrays, scratch)."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tmp"] = None  # scratch space, reallocated on the next build
        state["slots"] = {}
        return state

    def get_config(self) -> dict[str, Any]:
        """The optimizer's name and hyperparameters (a schedule as its config), as JSON-plain values."""
        lr = self._learning_rate
        return {"name": self.name,
                "learning_rate": lr.get_config() if isinstance(lr, LearningRateSchedule) else lr,
                "decay": self.decay}

    def apply_config(self, config: dict[str, Any]) -> None:
        """Take the hyperparameters of ``config`` (``get_config()`` of an optimizer of the same
        kind, e.g. after a callback changed its learning rate) through the constructor's
        checks, all or none; iterations and the slots that still apply are kept."""
        config = dict(config)
        who = f"{type(self).__name__}.apply_config"
        name = config.pop("name", self.name)
        if name != self.name:
            raise ValueError(f"{who}: expected a config of {self.name!r}, received one of {name!r}")
        known = set(self.get_config()) - {"name"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{who}: expected hyperparameters among {sorted(known)}, received {unknown}")
        before = dict(self.__dict__)
        try:
            if "learning_rate" in config:
                learning_rate = schedules.deserialize(config.pop("learning_rate"))
                # A schedule excludes a decay: a decay switched off goes before the rate, one
                # switched on after it.
                if "decay" in config and not config["decay"]:
                    self.decay = config.pop("decay")
                self.learning_rate = learning_rate
            for key, value in config.items():
                setattr(self, key, value)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """A new optimizer from a ``get_config`` dict."""
        config = dict(config)
        config.pop("name", None)
        if "learning_rate" in config:
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        # Set after construction: a user optimizer's __init__ need not take decay, which every
        # config holds.
        decay = config.pop("decay", 0.0)
        opt = cls(**config)
        opt.decay = decay
        return opt

    def get_state(self) -> dict[str, np.ndarray]:
        """Slots and the step counter, for checkpoints."""
        state = {f"slot/{k}": v.copy() for k, v in self.slots.items()}
        state["iterations"] = np.array(self.iterations, dtype=np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore the step counter and slots that ``get_state`` returned (from a checkpoint)."""
        self.iterations = int(state["iterations"])
        slots = {k[5:]: np.asarray(v, dtype=np.float32).copy() for k, v in state.items()
                 if k.startswith("slot/")}
        if slots:
            self.slots = slots
            self._tmp = np.empty(next(iter(slots.values())).size, dtype=np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


class SGD(Optimizer):
    """Keras SGD: ``v = momentum * v - lr * g``; ``p += v`` (or the Nesterov look-ahead)."""

    name = "sgd"
    default_learning_rate = 0.01
    momentum = Hyperparameter(below=1.0)
    nesterov = Hyperparameter(flag=True)

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None, momentum: float = 0.0,
                 nesterov: bool = False, *, decay: float = 0.0, lr: float | None = None):
        super().__init__(learning_rate, decay=decay, lr=lr)
        self.momentum = momentum
        self.nesterov = nesterov

    @property
    def slot_names(self) -> tuple[str, ...]:  # type: ignore[override]  # derived from the settings, not declared
        return ("momentum",) if self.momentum else ()

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        tmp = np.multiply(g, lr, out=tmp)
        if not self.momentum:
            p -= tmp
            return
        v = slots["momentum"]
        v *= self.momentum
        v -= tmp
        if self.nesterov:
            p -= tmp
            np.multiply(v, self.momentum, out=tmp)
            p += tmp
        else:
            p += v

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Keras Adam: bias correction folded into the step size, epsilon outside the root."""

    name = "adam"
    default_learning_rate = 0.001
    slot_names = ("m", "v")
    beta_1 = Hyperparameter(below=1.0)
    beta_2 = Hyperparameter(below=1.0)
    epsilon = Hyperparameter()

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, *, decay: float = 0.0, lr: float | None = None):
        super().__init__(learning_rate, decay=decay, lr=lr)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        m, v = slots["m"], slots["v"]
        t = self.iterations + 1
        alpha = lr * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        m *= self.beta_1
        np.multiply(g, 1 - self.beta_1, out=tmp)
        m += tmp
        v *= self.beta_2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta_2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(m, tmp, out=tmp)
        tmp *= np.float32(alpha)
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Adagrad(Optimizer):
    """``acc += g²``; ``p -= lr * g / (sqrt(acc) + epsilon)``."""

    name = "adagrad"
    default_learning_rate = 0.001
    slot_names = ("accumulator",)
    initial_accumulator_value = Hyperparameter()
    epsilon = Hyperparameter()

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None,
                 initial_accumulator_value: float = 0.1, epsilon: float = 1e-7, *, decay: float = 0.0,
                 lr: float | None = None):
        super().__init__(learning_rate, decay=decay, lr=lr)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _initial_slot(self, name: str, size: int) -> np.ndarray:
        return np.full(size, self.initial_accumulator_value, dtype=np.float32)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        acc = slots["accumulator"]
        np.multiply(g, g, out=tmp)
        acc += tmp
        np.sqrt(acc, out=tmp)
        tmp += self.epsilon
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """``ms = rho * ms + (1 - rho) * g²``; ``p -= lr * g / (sqrt(ms) + epsilon)``, with optional
    momentum (``mom = momentum * mom + step``; ``p -= mom``)."""

    name = "rmsprop"
    default_learning_rate = 0.001
    rho = Hyperparameter(below=1.0)
    momentum = Hyperparameter(below=1.0)
    epsilon = Hyperparameter()

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None, rho: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-7, *, decay: float = 0.0, lr: float | None = None):
        super().__init__(learning_rate, decay=decay, lr=lr)
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon

    @property
    def slot_names(self) -> tuple[str, ...]:  # type: ignore[override]  # derived from the settings, not declared
        return ("velocity", "momentum") if self.momentum else ("velocity",)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        ms = slots["velocity"]
        ms *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        ms += tmp
        np.sqrt(ms, out=tmp)
        tmp += self.epsilon
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        if self.momentum:
            mom = slots["momentum"]
            mom *= self.momentum
            mom += tmp
            p -= mom
        else:
            p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon}


class Ftrl(Optimizer):
    """FTRL-Proximal (McMahan et al. 2013) as in Keras, with L1 and L2 regularisation.

    ``n += g²``; ``z += g - (sqrt(n_new) - sqrt(n_old)) / lr * w``;
    ``w = (clip(z, -l1, l1) - z) / (sqrt(n) / lr + 2 * l2 + beta / lr)``.
    """

    name = "ftrl"
    default_learning_rate = 0.001
    slot_names = ("accumulator", "linear")
    l1 = Hyperparameter()
    l2 = Hyperparameter()
    initial_accumulator_value = Hyperparameter()
    beta = Hyperparameter()

    def __init__(self, learning_rate: float | LearningRateSchedule | None = None, l1: float = 0.0,
                 l2: float = 0.0, initial_accumulator_value: float = 0.1, beta: float = 0.0, *,
                 decay: float = 0.0, lr: float | None = None):
        super().__init__(learning_rate, decay=decay, lr=lr)
        self.l1, self.l2, self.beta = l1, l2, beta
        self.initial_accumulator_value = initial_accumulator_value

    def _initial_slot(self, name: str, size: int) -> np.ndarray:
        value = self.initial_accumulator_value if name == "accumulator" else 0.0
        return np.full(size, value, dtype=np.float32)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: np.float32, slots: dict[str, np.ndarray],
                tmp: np.ndarray) -> None:
        n, z = slots["accumulator"], slots["linear"]
        sqrt_old = np.sqrt(n)
        n += g * g
        sqrt_new = np.sqrt(n)
        z += g
        z -= (sqrt_new - sqrt_old) / lr * p
        quadratic = sqrt_new / lr + (2 * self.l2 + self.beta / lr)
        p[...] = (np.clip(z, -self.l1, self.l1) - z) / quadratic

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l1": self.l1, "l2": self.l2,
                "initial_accumulator_value": self.initial_accumulator_value, "beta": self.beta}


_REGISTRY = {cls.name: cls for cls in (SGD, Adam, Adagrad, RMSprop, Ftrl)}


def names() -> list[str]:
    """The names of the built-in optimizers, sorted."""
    return sorted(_REGISTRY)


def get(identifier: str | dict[str, Any] | Optimizer) -> Optimizer:
    """An Optimizer from itself, a name or a config; names are looked up in the custom objects
    (scopes, then the registry: ``sparkdl.saving``) before the built-ins."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, (str, dict)):
        user = custom_objects.resolve(identifier, "optimizer", Optimizer)
        if user is not None:
            return user
    if isinstance(identifier, dict):
        cls = _REGISTRY.get(str(identifier.get("name", "")).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer config {identifier!r}; expected one of {names()}")
        return cls.from_config(identifier)
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; expected one of {names()}")
        return cls()
    raise TypeError(f"expected an optimizer name (one of {names()}) or an Optimizer, "
                    f"received {type(identifier).__name__}: {identifier!r}")
