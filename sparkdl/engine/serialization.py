"""Saving and loading models: architecture and compile settings as JSON, arrays as ``.npz``.

A saved model is either a single zip file or a directory holding ``model.json`` and
``weights.npz``. Nothing is pickled: arrays are read with ``allow_pickle=False`` and layers
are rebuilt from their configs. User classes and functions are recorded by their registered
name and found again through ``sparkdl.engine.custom_objects``: a loader's ``custom_objects=``
is a scope around the whole load (nested configs included), consulted before the registry.
``to_json`` / ``model_from_json`` carry the architecture alone, as in Keras. ``model.json``
records the SHA-256 of ``weights.npz``, so a truncated or corrupted save is reported as such
instead of loading garbage. Files are written atomically (``sparkdl.engine.files``).

Training checkpoints (``sparkdl.distributed.checkpoint``) hold the same two members and use
this module's internal API on them: ``model_to_bytes``, ``check_document``,
``split_arrays`` and ``assign_weights``. Each takes the name of the operation it serves
(``who``), which starts its error messages.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkdl.engine.custom_objects import custom_object_scope, serialize
from sparkdl.engine.files import atomic_write, npz_arrays, npz_bytes, write_files

if TYPE_CHECKING:
    from sparkdl.engine.model import Model

FORMAT = "sparkdl.model"
VERSION = 1
#: The format of ``to_json``: the architecture alone.
ARCHITECTURE_FORMAT = "sparkdl.architecture"
_CONFIG, _WEIGHTS = "model.json", "weights.npz"
_WEIGHT, _OPTIMIZER = "weight/", "optimizer/"


def _model_arrays(model, with_optimizer: bool) -> dict[str, np.ndarray]:
    arrays = {f"{_WEIGHT}{i:04d}": w for i, w in enumerate(model.weights)}
    if with_optimizer and model.optimizer is not None:
        arrays.update({f"{_OPTIMIZER}{k}": v for k, v in model.optimizer.get_state().items()})
    return arrays


def split_arrays(arrays: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The arrays of a ``weights.npz`` as ``(weights in get_weights order, optimizer state)``;
    the state is keyed as ``Optimizer.get_state`` keys it (empty when none was saved)."""
    weights = [arrays[k] for k in sorted(k for k in arrays if k.startswith(_WEIGHT))]
    state = {k[len(_OPTIMIZER):]: v for k, v in arrays.items() if k.startswith(_OPTIMIZER)}
    return weights, state


def _document(model, weights_bytes: bytes) -> dict:
    compile_config = None
    if model.loss is not None:
        # Instances of registered classes are recorded under their registered names.
        compile_config = {"optimizer": serialize(model.optimizer, model.optimizer.get_config()),
                          "loss": serialize(model.loss, model.loss.get_config()),
                          "metrics": [serialize(m, m.get_config()) for m in model.metrics]}
    return {"format": FORMAT, "version": VERSION, "class_name": type(model).__name__,
            "config": model.get_config(), "compile": compile_config,
            "weights": {"file": _WEIGHTS, "count": len(model.weights),
                        "sha256": hashlib.sha256(weights_bytes).hexdigest()}}


def model_to_bytes(model: Model, who: str = "save") -> tuple[bytes, bytes]:
    """``(model.json, weights.npz)`` contents: what ``save_model`` writes, for callers that
    store them elsewhere (a Hadoop file system, a Pipeline's folder, a checkpoint)."""
    model.require_built(who)
    weights = npz_bytes(_model_arrays(model, with_optimizer=True))
    return json.dumps(_document(model, weights), indent=1).encode(), weights


def save_model(model: Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` to ``path`` as one zip: the architecture, compile settings and optimizer state as JSON and
    the weights as ``.npz`` arrays (no pickle). ``load_model`` reads it back."""
    path = os.fspath(path)
    doc, weights = model_to_bytes(model)
    # Weights first: the model document holds their checksum.
    write_files(path, {_WEIGHTS: weights, _CONFIG: doc})


def _read(path: str) -> tuple[dict, bytes]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no saved model at {path!r}")
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, _CONFIG), "rb") as f:
                raw_doc = f.read()
            with open(os.path.join(path, _WEIGHTS), "rb") as f:
                weights = f.read()
        else:
            with zipfile.ZipFile(path) as zf:
                raw_doc, weights = zf.read(_CONFIG), zf.read(_WEIGHTS)
    except (zipfile.BadZipFile, KeyError, FileNotFoundError, EOFError, zipfile.LargeZipFile) as exc:
        raise ValueError(f"load_model: {path!r} is not a complete sparkdl model (expected a zip file "
                         f"or directory holding {_CONFIG} and {_WEIGHTS}): {exc}") from None
    return check_document(raw_doc, weights, path), weights


def check_document(raw_doc: bytes, weights: bytes, where: str, who: str = "load_model") -> dict:
    """The parsed ``model.json``, after checking its format, version and the checksum of
    ``weights`` (the ``weights.npz`` bytes); a ValueError starting with ``who`` and naming
    ``where`` otherwise."""
    try:
        doc = json.loads(raw_doc)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{who}: {_CONFIG} in {where!r} is corrupted (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{who}: {where!r} is not a sparkdl model (expected format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{who}: {where!r} has format version {doc.get('version')!r}; this "
                         f"sparkdl reads version {VERSION}")
    try:
        recorded = doc["weights"]["sha256"]
    except (KeyError, TypeError):
        raise ValueError(f"{who}: {_CONFIG} in {where!r} is corrupted (it has no "
                         f"weights.sha256 entry)") from None
    if hashlib.sha256(weights).hexdigest() != recorded:
        raise ValueError(f"{who}: {_WEIGHTS} in {where!r} is corrupted or truncated "
                         f"(its SHA-256 does not match the one recorded at save time)")
    return doc


def assign_weights(model, arrays: dict[str, np.ndarray], where: str, who: str = "load") -> None:
    """Set ``model``'s weights from the arrays of a ``weights.npz`` (``npz_arrays``); a count or
    shape that does not fit the architecture is a ValueError and changes nothing."""
    weights, _ = split_arrays(arrays)
    expected = len(model.weights)
    if len(weights) != expected:
        raise ValueError(f"{who}: {where!r} holds {len(weights)} weight arrays, the architecture "
                         f"expects {expected}")
    model.set_weights(weights)


def model_from_config(class_name: str, config: dict[str, Any],
                      custom_objects: dict[str, Any] | None = None, who: str = "load_model") -> Model:
    from sparkdl.engine.model import Model
    from sparkdl.engine.sequential import Sequential
    classes: dict[str, type[Model]] = {"Sequential": Sequential, "Model": Model}
    if class_name not in classes:
        raise ValueError(f"{who}: unknown model class {class_name!r}; expected one of {sorted(classes)}")
    with custom_object_scope(custom_objects):
        return classes[class_name].from_config(config, custom_objects=custom_objects)


def model_to_json(model: Model, **kwargs: Any) -> str:
    """The architecture of ``model`` as a JSON string (no weights, no compile settings);
    ``kwargs`` go to ``json.dumps`` (``indent=2``)."""
    return json.dumps({"format": ARCHITECTURE_FORMAT, "version": VERSION,
                       "class_name": type(model).__name__, "config": model.get_config()}, **kwargs)


def model_from_json(json_string: str | bytes, custom_objects: dict[str, Any] | None = None) -> Model:
    """A new model of the architecture ``model.to_json()`` gave, with freshly initialised
    weights (``set_weights`` to copy some in), uncompiled. A ``model.json`` of a saved model
    is read as its architecture too. User objects resolve as in ``load_model``."""
    who = "model_from_json"
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError(f"{who}: expected a JSON string, received {type(json_string).__name__}")
    try:
        doc = json.loads(json_string)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{who}: expected a JSON string, received invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format", ARCHITECTURE_FORMAT) not in (ARCHITECTURE_FORMAT, FORMAT) \
            or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("class_name"), str):
        shown = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{who}: expected the JSON of model.to_json() (an object with 'class_name' "
                         f"and 'config'), received {shown}")
    if doc.get("version", VERSION) != VERSION:
        raise ValueError(f"{who}: expected format version {VERSION}, received {doc.get('version')!r}")
    try:
        return model_from_config(doc["class_name"], doc["config"], custom_objects, who)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{who}: the architecture is invalid: {exc!r}") from None


def load_model(path: str | os.PathLike[str], custom_objects: dict[str, Any] | None = None,
               compile: bool = True) -> Model:
    """Rebuild a model saved with ``model.save(path)``: architecture, weights, and (when it was
    compiled and ``compile=True``) its optimizer with its state, loss and metrics."""
    path = os.fspath(path)
    doc, weights = _read(path)
    return _build(doc, weights, path, custom_objects, compile)


def model_from_bytes(raw_doc: bytes, weights: bytes, where: str, custom_objects: dict[str, Any] | None = None,
                     compile: bool = True, who: str = "load_model") -> Model:
    """The model whose ``model_to_bytes`` were ``(raw_doc, weights)``; ``where`` names their
    origin and ``who`` the operation in error messages. Checked like ``load_model``."""
    return _build(check_document(raw_doc, weights, where, who), weights, where, custom_objects,
                  compile, who)


def _build(doc: dict, weights: bytes, path: str, custom_objects, compile: bool, who: str = "load_model"):
    arrays = npz_arrays(weights, path, who)
    try:
        model = model_from_config(doc["class_name"], doc["config"], custom_objects, who)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{who}: the architecture in {path!r} is invalid: {exc!r}") from None
    assign_weights(model, arrays, path, who)
    if compile and doc.get("compile"):
        c = doc["compile"]
        with custom_object_scope(custom_objects):   # compile resolves names as the layers did
            model.compile(optimizer=c["optimizer"], loss=c["loss"], metrics=c["metrics"])
        _, opt_state = split_arrays(arrays)
        if opt_state:
            assert model.optimizer is not None, "compiled just above"
            model.optimizer.set_state(opt_state)
    return model


def save_weights(model: Model, path: str | os.PathLike[str]) -> None:
    """Weights only, as an ``.npz`` file (loadable into the same architecture)."""
    model.require_built("save_weights")
    atomic_write(os.fspath(path), npz_bytes(_model_arrays(model, with_optimizer=False)))


def load_weights(model: Model, path: str | os.PathLike[str]) -> None:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_weights: no file at {path!r}")
    with open(path, "rb") as f:
        assign_weights(model, npz_arrays(f.read(), path, "load_weights"), path, "load_weights")
