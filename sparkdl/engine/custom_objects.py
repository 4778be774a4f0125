"""User objects by name: the registry, the ``custom_objects`` scopes, and the one lookup that
every loader goes through.

A saved model names each layer class, activation, loss, metric, initializer and optimizer it
holds. A built-in name resolves in its own module (``layers.get``, ``activations.get``, ...);
before that, each of those ``get`` functions asks ``get_registered_object`` here (through
``resolve``, which also makes the object from its config), which looks in

1. the ``custom_objects`` dicts in scope, innermost first: ``custom_object_scope({...})``, or
   the ``custom_objects=`` argument of a loader, which opens such a scope for its duration;
2. the registry, filled by ``@register_serializable(package="Custom", name=None)`` (Keras'
   ``register_keras_serializable``) or ``get_custom_objects()[name] = obj``.

So ``custom_objects=`` wins over the registry, and both reach every loader (``load_model``,
``model_from_json``, checkpoints, the pyspark.ml readers) and nested configs (a layer's
activation or initializer) alike. A registered object is saved under its registered name
``"package>name"``; a scope may hold it under that name or under ``name`` alone. Scopes are
per thread; the registry is per process, and is filled again in another process when that
process imports the module that defines (and registers) the objects.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

from sparkdl.engine import checks

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def _describe(obj: object) -> str:
    """``module.qualname`` of a class or function, else its repr."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(obj)


def _same_definition(a: object, b: object) -> bool:
    """Two objects defined by the same code: a reloaded module or a re-run notebook cell makes
    a new class object of the same module and qualified name."""
    def key(obj: object) -> tuple[Any, Any]:
        return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return key(a)[1] is not None and key(a) == key(b)


class _Registry(MutableMapping[str, Any]):
    """The process-wide map from registered names to objects, and back. Setting a name that
    holds another object is a ValueError naming both (a re-definition of the same class or
    function, as after a module reload, replaces it)."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._names: dict[int, str] = {}  # id(object) -> its newest registered name

    def __getitem__(self, name: str) -> Any:
        return self._objects[name]

    def __setitem__(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise checks.invalid("register_serializable", "a non-empty str name", "name", name, TypeError)
        old = self._objects.get(name)
        if old is not None and old is not obj:
            if not _same_definition(old, obj):
                raise ValueError(f"register_serializable: the name {name!r} is taken by "
                                 f"{_describe(old)}; expected another name for {_describe(obj)}")
            logger.debug("custom object %r redefined: %s replaces the earlier definition",
                         name, _describe(obj))
            self._names.pop(id(old), None)
        self._objects[name] = obj
        self._names[id(obj)] = name

    def __delitem__(self, name: str) -> None:
        obj = self._objects.pop(name)
        if self._names.get(id(obj)) == name:
            del self._names[id(obj)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def name_of(self, obj: object) -> str | None:
        name = self._names.get(id(obj))
        return name if name is not None and self._objects.get(name) is obj else None


_REGISTRY = _Registry()
_local = threading.local()


def _scopes() -> list[Mapping[str, Any]]:
    stack: list[Mapping[str, Any]] | None = getattr(_local, "scopes", None)
    if stack is None:
        stack = _local.scopes = []
    return stack


def register_serializable(package: str = "Custom",
                          name: str | None = None) -> Callable[[_T], _T]:
    """Register a class or function under ``"package>name"`` (``name`` defaults to its
    ``__name__``) so that loaders find it by the name a saved model records; returns it
    unchanged. A layer, activation, loss, metric, initializer or optimizer saved by a model is
    recorded under this name. Registering another object under a taken name is a ValueError
    naming both.

    ::

        @register_serializable(package="my_project")
        class Scale(layers.Layer): ...
    """
    for value, arg in ((package, "package"), (name, "name")):
        if value is not None and (not isinstance(value, str) or not value or ">" in value):
            raise checks.invalid("register_serializable", f"{arg} as a non-empty str without '>'",
                                 arg, value, TypeError if not isinstance(value, str) else ValueError)

    def decorator(obj: _T) -> _T:
        if not callable(obj):
            raise checks.invalid("register_serializable", "a class or a function", None, obj, TypeError)
        own = name if name is not None else getattr(obj, "__name__", None)
        if own is None:
            raise checks.invalid("register_serializable", "an object with a __name__ (or name=...)",
                                 None, obj, TypeError)
        _REGISTRY[f"{package}>{own}"] = obj
        return obj
    return decorator


#: Keras' name for ``register_serializable``, so ported code changes its imports only.
register_keras_serializable = register_serializable


@contextlib.contextmanager
def custom_object_scope(*scopes: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Within the ``with`` block, loaders resolve the names of these dicts (later ones win)
    to their objects, before the registry and the built-ins: Keras' ``custom_object_scope``.
    Nested scopes look innermost first. Yields the merged dict."""
    merged: dict[str, Any] = {}
    for scope in scopes:
        if scope is None:
            continue
        if not isinstance(scope, Mapping):
            raise checks.invalid("custom_object_scope", "dicts of {name: object}", None, scope, TypeError)
        for key in scope:
            if not isinstance(key, str):
                raise checks.invalid("custom_object_scope", "str names as keys", None, key, TypeError)
        merged.update(scope)
    stack = _scopes()
    stack.append(merged)
    try:
        yield merged
    finally:
        stack.pop()


def get_custom_objects() -> MutableMapping[str, Any]:
    """The registry as a mutable mapping: ``get_custom_objects()["swish"] = swish`` registers
    (with the same check as the decorator), as in Keras."""
    return _REGISTRY


def get_registered_name(obj: object) -> str:
    """The name ``obj`` (or, for an instance, its class) is registered under, else its
    ``__name__``, else its class's: the name a saved model records for it."""
    for candidate in (obj, type(obj)):
        name = _REGISTRY.name_of(candidate)
        if name is not None:
            return name
    own = getattr(obj, "__name__", None)
    return own if isinstance(own, str) else type(obj).__name__


def is_registered(obj: object) -> bool:
    """True for an object or an instance of a class in the registry."""
    return _REGISTRY.name_of(obj) is not None or _REGISTRY.name_of(type(obj)) is not None


def get_registered_object(name: str, custom_objects: Mapping[str, Any] | None = None) -> Any | None:
    """The object called ``name`` in ``custom_objects``, the scopes (innermost first) or the
    registry, in that order; None when none holds it. A registered name ``"package>name"``
    also matches ``name`` alone in ``custom_objects`` and the scopes."""
    short = name.rpartition(">")[2]
    keys = (name,) if short == name else (name, short)
    scopes = ([custom_objects] if custom_objects else []) + list(reversed(_scopes()))
    for scope in scopes:
        for key in keys:
            if key in scope:
                return scope[key]
    return _REGISTRY.get(name)


def serialize(obj: object, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a saved document records it: under the registered name
    (``{"class_name": "package>name", "config": config}``) for an instance of a registered
    class, else as it is (built-ins and unregistered objects keep their ``{"name": ...}``
    form, which ``custom_objects`` resolves)."""
    name = _REGISTRY.name_of(type(obj))
    return config if name is None else {"class_name": name, "config": config}


def split(doc: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(registered name, config)`` of a ``serialize`` document; ``(None, doc)`` for a plain
    config."""
    if "class_name" in doc and isinstance(doc.get("config"), Mapping):
        return str(doc["class_name"]), dict(doc["config"])
    return None, dict(doc)


def instantiate(obj: Any, config: Mapping[str, Any] | None) -> Any:
    """A class made from ``config`` (``from_config`` when it has one, else its constructor on
    the config without ``name``); any other object as it is."""
    if not isinstance(obj, type):
        return obj
    config = dict(config or {})
    if hasattr(obj, "from_config"):
        return obj.from_config(config)
    config.pop("name", None)
    return obj(**config)


def resolve(identifier: str | Mapping[str, Any], kind: str, base: type[_T]) -> _T | None:
    """The user object a name or config refers to, made from its config and checked to be a
    ``base``; None for a name no scope or registry holds (the caller's built-ins then).

    ``identifier``: a name, a ``{"class_name": ..., "config": ...}`` document (``serialize``),
    which must resolve (a ValueError saying how to register it otherwise), or a
    ``{"name": ..., **config}`` config. ``kind`` ("metric", "loss", ...) words the errors.
    """
    name: Any
    if isinstance(identifier, str):
        name, config, required = identifier, None, False
    elif "class_name" in identifier:
        name, config, required = identifier["class_name"], identifier.get("config"), True
    else:
        name, config, required = identifier.get("name"), identifier, False
    if not isinstance(name, str):
        return None
    obj = get_registered_object(name)
    if obj is None:
        if required:
            raise ValueError(f"unknown {kind} {name!r}; expected a registered object "
                             f"(@register_serializable) or custom_objects={{{name!r}: ...}}")
        return None
    made = instantiate(obj, config)
    if not isinstance(made, base):
        raise TypeError(f"expected the custom object {name!r} to be a {base.__name__} (or a class "
                        f"making one) as a {kind}, received {_describe(obj)}")
    return made
