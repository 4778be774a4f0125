"""Argument rules, declared once: constructors, setters and ``apply_config`` paths across
sparkdl (engine, distributed protocol, Spark layer) check their arguments with these
functions, as Keras does with ``argument_validation`` and pyspark with ``TypeConverters``, so
a rule and its message are written in one place. Each check takes the value, the argument's
name and who is asking (``"Dense"``, ``"fit"``), and returns the value normalised (an
``int``, a ``float``, a tuple) or raises ``error`` (ValueError unless the caller's protocol
answers with another class, such as the parameter server's ``Refused``) with one message
shape: ``Dense: expected units > 0 (an int), received units=0``. The ``optional_`` variants
also take None. A ``name`` of None is for a function's only argument: ``set_num_threads:
expected an int >= 1 or None, received 0``. NumPy only, so every layer can import it.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, Optional, TypeVar

import numpy as np

T = TypeVar("T")
#: a bound of a check: None (no bound) or a number
Bound = Optional[float]
#: (at_least, above, at_most, below)
Bounds = tuple[Bound, Bound, Bound, Bound]


def is_integer(value: object) -> bool:
    """An int or NumPy integer; a bool is not one (``Dense(True)`` is a mistake, not 1 unit)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float, Python or NumPy; a bool is not one."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def invalid(who: str, expected: str, name: str | None, value: object,
            error: type[Exception] = ValueError) -> Exception:
    """The error saying ``value`` breaks a rule worded ``expected``, for a rule the checks
    below do not cover (raise it: ``raise checks.invalid(...)``)."""
    received = repr(value) if name is None else f"{name}={value!r}"
    return error(f"{who}: expected {expected}, received {received}")


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


# Bounds travel as (at_least, above, at_most, below), any of them None.
def _within(value: Any, bounds: Bounds) -> bool:
    at_least, above, at_most, below = bounds
    return ((at_least is None or value >= at_least) and (above is None or value > above)
            and (at_most is None or value <= at_most) and (below is None or value < below))


def _expected(kind: str, name: str | None, bounds: Bounds, or_none: bool) -> str:
    """The rule in words: ``units > 0 (an int)``, ``beta_1 >= 0 and < 1``, ``an int
    'partition'``, ``an int >= 1 or None``, ``a non-negative int``."""
    limits = " and ".join(f"{op} {_show(bound)}" for op, bound in zip((">=", ">", "<=", "<"), bounds)
                          if bound is not None)
    a_kind = "an int" if kind == "int" else "a number"
    if name is None:
        text = f"a non-negative {kind}" if limits == ">= 0" else f"{a_kind} {limits}".rstrip()
    elif not limits:
        text = f"{a_kind} {name}"
    else:
        # "learning_rate >= 0" already says a number; "units > 0" does not say an int.
        text = f"{name} {limits}" + (f" ({a_kind})" if kind == "int" else "")
    return text + (" or None" if or_none else "")


def integer(value: Any, name: str | None, who: str, *, at_least: Bound = None, above: Bound = None,
            at_most: Bound = None, below: Bound = None, error: type[Exception] = ValueError,
            type_error: type[Exception] | None = None) -> int:
    """``value`` as an int within the bounds; a value of another type raises ``type_error``
    (default: ``error``)."""
    return _integer(value, name, who, (at_least, above, at_most, below), False, error,
                    type_error or error)


def optional_integer(value: Any, name: str | None, who: str, *, at_least: Bound = None,
                     above: Bound = None, at_most: Bound = None, below: Bound = None,
                     error: type[Exception] = ValueError) -> int | None:
    """None, or ``value`` as an int within the bounds."""
    if value is None:
        return None
    return _integer(value, name, who, (at_least, above, at_most, below), True, error, error)


def _integer(value: Any, name: str | None, who: str, bounds: Bounds, or_none: bool,
             error: type[Exception], type_error: type[Exception]) -> int:
    if not (is_integer(value) and _within(value, bounds)):
        raise invalid(who, _expected("int", name, bounds, or_none), name, value,
                      error if is_integer(value) else type_error)
    return int(value)


def number(value: Any, name: str | None, who: str, *, at_least: Bound = None, above: Bound = None,
           at_most: Bound = None, below: Bound = None, error: type[Exception] = ValueError) -> float:
    """``value`` as a finite float within the bounds."""
    return _number(value, name, who, (at_least, above, at_most, below), False, error)


def optional_number(value: Any, name: str | None, who: str, *, at_least: Bound = None,
                    above: Bound = None, at_most: Bound = None, below: Bound = None,
                    error: type[Exception] = ValueError) -> float | None:
    """None, or ``value`` as a finite float within the bounds."""
    if value is None:
        return None
    return _number(value, name, who, (at_least, above, at_most, below), True, error)


def _number(value: Any, name: str | None, who: str, bounds: Bounds, or_none: bool,
            error: type[Exception]) -> float:
    if not (is_number(value) and math.isfinite(value) and _within(value, bounds)):
        raise invalid(who, _expected("number", name, bounds, or_none), name, value, error)
    return float(value)


def fraction(value: Any, name: str, who: str, *, error: type[Exception] = ValueError) -> float:
    """``value`` as a float in [0, 1): a rate, a decay, a slope."""
    if not (is_number(value) and 0 <= value < 1):
        raise invalid(who, f"0 <= {name} < 1", name, value, error)
    return float(value)


def one_of(value: T, choices: Collection[T], name: str, who: str, *, ignore_case: bool = False,
           error: type[Exception] = ValueError) -> T:
    """``value`` if it is one of ``choices`` (with ``ignore_case``, the choice a string matches
    in any case: ``"SAME"`` gives ``"same"``)."""
    if ignore_case and isinstance(value, str) and value.lower() in choices:
        return value.lower()  # type: ignore[return-value]  # T is str here
    if value not in choices:
        words = " or ".join(map(repr, choices)) if len(choices) == 2 else f"in {tuple(choices)!r}"
        raise invalid(who, f"{name} {words}", name, value, error)
    return value


def _sizes(value: Any, count: int | None, expected: str, name: str, who: str) -> tuple[int, ...]:
    items = (value,) * (count or 1) if is_integer(value) else value
    try:
        if isinstance(items, (str, bytes)):
            raise TypeError  # iterable, but "784" is not the shape (7, 8, 4)
        items = tuple(items)
        sizes = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise invalid(who, expected, name, value, TypeError) from None
    if count is not None and len(sizes) != count:
        raise invalid(who, expected, name, value, TypeError)
    if any(isinstance(v, bool) for v in items) or any(v <= 0 for v in sizes):
        raise invalid(who, expected, name, value)
    return sizes


def shape(value: Any, name: str, who: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape: a tuple of positive sizes."""
    return _sizes(value, None, f"{name} as a positive int or a tuple of positive ints", name, who)


def pair(value: Any, name: str, who: str) -> tuple[int, int]:
    """An int or a pair of ints (a kernel size, strides) as a pair of positive ints."""
    a, b = _sizes(value, 2, f"{name} as a positive int or a pair of positive ints", name, who)
    return a, b
