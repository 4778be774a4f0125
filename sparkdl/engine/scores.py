"""What ``evaluate`` returns: the loss and compiled metrics by name, and by position as Keras.

``Scores`` is a ``dict`` (``{"loss": ..., "accuracy": ...}``, the loss first and the metrics
in compile order) that also reads by position in Keras' order: ``scores[0]`` is the loss and
``scores[1]`` the first compiled metric, so code written for Keras' list (and Elephas') keeps
working. Everything else is the dict's: iteration yields the names, ``==`` compares with
dicts, ``json.dumps`` writes an object. ``returned(scores, return_dict)`` gives the form an
``evaluate(..., return_dict=...)`` call asked for. NumPy only.
"""
from __future__ import annotations

from typing import Any, overload

from sparkdl.engine import checks


class Scores(dict[str, float]):
    """The loss and metrics of an evaluation by name (a dict), also indexable by position
    (``scores[0]``: the loss, ``scores[1]``: the first compiled metric; slices give lists).

    Unpacking gives the names, as for any dict; Keras' ``loss, acc = model.evaluate(x, y)``
    is written ``model.evaluate(x, y, return_dict=False)``."""

    @overload
    def __getitem__(self, key: str) -> float: ...

    @overload
    def __getitem__(self, key: int) -> float: ...

    @overload
    def __getitem__(self, key: slice) -> list[float]: ...

    def __getitem__(self, key: str | int | slice) -> float | list[float]:
        if checks.is_integer(key):
            values = list(self.values())
            position = int(key)  # type: ignore[arg-type]  # an int or NumPy integer here
            if not -len(values) <= position < len(values):
                raise IndexError(f"Scores: expected a position in [{-len(values)}, {len(values) - 1}] "
                                 f"(0 is the loss, then the metrics {list(self)[1:]}), received {position}")
            return values[position]
        if isinstance(key, slice):
            return list(self.values())[key]
        return super().__getitem__(key)  # type: ignore[index]  # a name, or the dict's KeyError

    def to_list(self) -> list[float]:
        """Keras' list: the loss, then the metrics in compile order."""
        return list(self.values())


def check_return_dict(return_dict: Any, who: str) -> bool | None:
    """``return_dict`` if it is True, False or None (a TypeError naming it otherwise)."""
    if return_dict is not None and not isinstance(return_dict, bool):
        raise checks.invalid(who, "return_dict as True, False or None", "return_dict", return_dict, TypeError)
    return return_dict


def returned(scores: dict[str, float], return_dict: bool | None) -> Scores | dict[str, float] | list[float] | float:
    """``scores`` (the loss first, then the metrics) in the form ``return_dict`` asks for
    (checked by ``check_return_dict``): None → ``Scores``; True → a plain dict; False → Keras'
    list of floats, or the loss alone when there are no metrics."""
    if return_dict is None:
        return Scores(scores)
    if return_dict:
        return dict(scores)
    values = list(scores.values())
    return values if len(values) > 1 else values[0]
