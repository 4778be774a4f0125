"""Saving and loading models: architecture and compile settings as JSON, arrays as ``.npz``.

A saved model is either a single zip file or a directory holding ``model.json`` and
``weights.npz``. Nothing is pickled: arrays are read with ``allow_pickle=False`` and layers
are rebuilt from their configs (user classes through ``custom_objects``). ``model.json``
records the SHA-256 of ``weights.npz``, so a truncated or corrupted save is reported as such
instead of loading garbage. Files are written to a temporary name, fsynced and renamed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "sparkdl.model"
VERSION = 1
_CONFIG, _WEIGHTS = "model.json", "weights.npz"


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _model_arrays(model, with_optimizer: bool) -> dict[str, np.ndarray]:
    arrays = {f"weight/{i:04d}": w for i, w in enumerate(model.weights)}
    if with_optimizer and model.optimizer is not None:
        arrays.update({f"optimizer/{k}": v for k, v in model.optimizer.get_state().items()})
    return arrays


def _document(model, weights_bytes: bytes) -> dict:
    compile_config = None
    if model.loss is not None:
        compile_config = {"optimizer": model.optimizer.get_config(),
                          "loss": model.loss.get_config(),
                          "metrics": [m.get_config() for m in model.metrics]}
    return {"format": FORMAT, "version": VERSION, "class_name": type(model).__name__,
            "config": model.get_config(), "compile": compile_config,
            "weights": {"file": _WEIGHTS, "count": len(model.weights),
                        "sha256": hashlib.sha256(weights_bytes).hexdigest()}}


def model_to_bytes(model) -> tuple[bytes, bytes]:
    """``(model.json, weights.npz)`` contents: what ``save_model`` writes, for callers that
    store them elsewhere (a Hadoop file system, a Pipeline's folder)."""
    model._require_built("save")
    weights = _npz_bytes(_model_arrays(model, with_optimizer=True))
    return json.dumps(_document(model, weights), indent=1).encode(), weights


def save_model(model, path) -> None:
    path = os.fspath(path)
    doc, weights = model_to_bytes(model)
    if os.path.isdir(path):
        # Weights first: a crash between the two renames leaves a checksum mismatch, not a
        # silently mixed model.
        _atomic_write(os.path.join(path, _WEIGHTS), weights)
        _atomic_write(os.path.join(path, _CONFIG), doc)
        return
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_CONFIG, doc)
        zf.writestr(_WEIGHTS, weights)
    _atomic_write(path, buf.getvalue())


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
    return _check(raw_doc, weights, path), weights


def _check(raw_doc: bytes, weights: bytes, path: str) -> dict:
    """The parsed model.json, after checking its format, version and the weights' checksum."""
    try:
        doc = json.loads(raw_doc)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"load_model: {_CONFIG} in {path!r} is corrupted (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"load_model: {path!r} is not a sparkdl model (expected format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"load_model: {path!r} has format version {doc.get('version')!r}; this "
                         f"sparkdl reads version {VERSION}")
    try:
        recorded = doc["weights"]["sha256"]
    except (KeyError, TypeError):
        raise ValueError(f"load_model: {_CONFIG} in {path!r} is corrupted (it has no "
                         f"weights.sha256 entry)") from None
    if hashlib.sha256(weights).hexdigest() != recorded:
        raise ValueError(f"load_model: {_WEIGHTS} in {path!r} is corrupted or truncated "
                         f"(its SHA-256 does not match the one recorded at save time)")
    return doc


def _load_arrays(weights: bytes, path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"load_model: cannot read the arrays of {path!r}: {exc}") from None


def _assign_weights(model, arrays: dict[str, np.ndarray], path: str) -> None:
    stored = sorted(k for k in arrays if k.startswith("weight/"))
    expected = len(model.weights)
    if len(stored) != expected:
        raise ValueError(f"load: {path!r} holds {len(stored)} weight arrays, the architecture "
                         f"expects {expected}")
    model.set_weights([arrays[k] for k in stored])


def model_from_config(class_name: str, config: dict, custom_objects=None):
    from sparkdl.engine.model import Model
    from sparkdl.engine.sequential import Sequential
    classes = {"Sequential": Sequential, "Model": Model}
    if class_name not in classes:
        raise ValueError(f"load_model: unknown model class {class_name!r}; expected one of {sorted(classes)}")
    return classes[class_name].from_config(config, custom_objects=custom_objects)


def _resolve(registry_get, config, custom_objects):
    """A built-in from its config, or the user object registered under its name."""
    name = config.get("name") if isinstance(config, dict) else config
    if custom_objects and name in custom_objects:
        obj = custom_objects[name]
        return obj() if isinstance(obj, type) else obj
    return registry_get(config)


def load_model(path, custom_objects: dict | None = None, compile: bool = True):
    """Rebuild a model saved with ``model.save(path)``: architecture, weights, and (when it was
    compiled and ``compile=True``) its optimizer with its state, loss and metrics."""
    path = os.fspath(path)
    doc, weights = _read(path)
    return _build(doc, weights, path, custom_objects, compile)


def model_from_bytes(raw_doc: bytes, weights: bytes, where: str, custom_objects: dict | None = None,
                     compile: bool = True):
    """The model whose ``model_to_bytes`` were ``(raw_doc, weights)``; ``where`` names their
    origin in error messages. Checked like ``load_model``."""
    return _build(_check(raw_doc, weights, where), weights, where, custom_objects, compile)


def _build(doc: dict, weights: bytes, path: str, custom_objects, compile: bool):
    arrays = _load_arrays(weights, path)
    try:
        model = model_from_config(doc["class_name"], doc["config"], custom_objects)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"load_model: the architecture in {path!r} is invalid: {exc!r}") from None
    _assign_weights(model, arrays, path)
    if compile and doc.get("compile"):
        from sparkdl.engine import losses, metrics, optimizers
        c = doc["compile"]
        model.compile(optimizer=_resolve(optimizers.get, c["optimizer"], custom_objects),
                      loss=_resolve(losses.get, c["loss"], custom_objects),
                      metrics=[_resolve(metrics.get, m, custom_objects) for m in c["metrics"]])
        opt_state = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
        if opt_state:
            model.optimizer.set_state(opt_state)
    return model


def save_weights(model, path) -> None:
    """Weights only, as an ``.npz`` file (loadable into the same architecture)."""
    model._require_built("save_weights")
    _atomic_write(os.fspath(path), _npz_bytes(_model_arrays(model, with_optimizer=False)))


def load_weights(model, path) -> None:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_weights: no file at {path!r}")
    with open(path, "rb") as f:
        _assign_weights(model, _load_arrays(f.read(), path), path)
