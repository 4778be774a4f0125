"""Training checkpoints: one self-checking file per checkpoint, restored into the driver's model.

A checkpoint is a zip file (stored, not compressed) named ``ckpt-{step:08d}.sdlckpt`` holding

- ``model.json`` and ``weights.npz``: exactly what the engine's ``model_to_bytes`` writes
  (architecture, compile settings with the optimizer's config, weights, moving statistics,
  optimizer slots and iterations), so a checkpoint is also loadable as a model;
- ``arrays.npz``: the caller's extra named arrays (metric states, ...);
- ``checkpoint.json``, written last: format name and version, step, the caller's ``meta``
  dict, the model's layer layout (class, config without the name, weight shapes) used to
  refuse a mismatched model, and the SHA-256 of every other member.

Files are written atomically (``sparkdl.engine.files.atomic_write``: a temporary name in the
same directory, fsynced, renamed, the directory fsynced), so a crash leaves either the
previous set of checkpoints or the new one.
A truncated or corrupted checkpoint is detected on restore and the previous one is used.
Nothing is pickled. One writer per directory is assumed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from sparkdl.engine import checks, custom_objects
from sparkdl.engine.files import atomic_write, json_plain, npz_arrays
from sparkdl.engine.files import npz_bytes
from sparkdl.engine.serialization import assign_weights, check_document, model_to_bytes, split_arrays

logger = logging.getLogger("sparkdl.distributed.checkpoint")

FORMAT = "sparkdl.checkpoint"
VERSION = 1
SUFFIX = ".sdlckpt"
_MANIFEST, _MODEL, _WEIGHTS, _ARRAYS = "checkpoint.json", "model.json", "weights.npz", "arrays.npz"
_NAME_RE = re.compile(r"^ckpt-(\d{8,})" + re.escape(SUFFIX) + r"$")
_TEMP_RE = re.compile(r"^\.ckpt-\d{8,}\..*\.tmp$")
_ARRAY_KINDS = "biufc"  # bool, signed/unsigned int, float, complex
_SAVE, _RESTORE = "CheckpointStore.save", "CheckpointStore.restore_latest"


@dataclass
class Checkpoint:
    """A restored checkpoint: its step, the caller's ``meta`` and extra ``arrays``, its file."""
    step: int
    meta: dict
    arrays: dict = field(default_factory=dict)
    path: str = ""


class _Unreadable(Exception):
    """A checkpoint file that is truncated, corrupted or not a checkpoint (the reason)."""


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}{SUFFIX}"


def _local_dir(directory) -> str:
    """A local path from a path, ``os.PathLike`` or ``file:`` URI."""
    if isinstance(directory, os.PathLike):
        directory = os.fspath(directory)
    if not isinstance(directory, str) or not directory:
        raise TypeError(f"CheckpointStore: expected a local directory path or a 'file:' URI, "
                        f"received {type(directory).__name__}: {directory!r}")
    if directory[:5].lower() == "file:":
        parsed = urllib.parse.urlparse(directory)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"CheckpointStore: expected a local 'file:' URI, received "
                             f"{directory!r} (host {parsed.netloc!r})")
        path = urllib.request.url2pathname(parsed.path)
        if not path:
            raise ValueError(f"CheckpointStore: the URI {directory!r} names no directory")
        return os.path.abspath(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]+://", directory):
        raise ValueError(f"CheckpointStore: expected a local directory path or a 'file:' URI, "
                         f"received {directory!r} (other file systems are not supported)")
    return os.path.abspath(directory)


def _check_json(value, where: str, seen: set) -> None:
    """Raise TypeError naming the first value under ``where`` that does not survive JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            raise TypeError(f"CheckpointStore.save: meta{where} is not JSON-serialisable "
                            f"(it contains itself)")
        seen.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"CheckpointStore.save: meta{where} is not JSON-serialisable: "
                                    f"expected str keys, received key {k!r} of type "
                                    f"{type(k).__name__}")
                _check_json(v, f"{where}[{k!r}]", seen)
        else:
            for i, v in enumerate(value):
                _check_json(v, f"{where}[{i}]", seen)
        seen.discard(id(value))
        return
    hint = " (convert numpy values with int(), float() or .tolist())" \
        if isinstance(value, (np.generic, np.ndarray)) else ""
    raise TypeError(f"CheckpointStore.save: meta{where} is not JSON-serialisable: expected None, "
                    f"bool, int, float, str, list or dict, received {type(value).__name__}: "
                    f"{value!r}{hint}")


def _check_arrays(arrays) -> dict[str, np.ndarray]:
    if arrays is None:
        return {}
    if not isinstance(arrays, dict):
        raise TypeError(f"CheckpointStore.save: expected arrays as a dict of name -> numpy "
                        f"array, received {type(arrays).__name__}")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"CheckpointStore.save: expected array names as non-empty str, "
                            f"received {name!r}")
        if not isinstance(value, (np.ndarray, np.generic)):
            raise TypeError(f"CheckpointStore.save: expected arrays[{name!r}] to be a numpy "
                            f"array, received {type(value).__name__}")
        value = np.asarray(value)
        if value.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"CheckpointStore.save: expected arrays[{name!r}] of a numeric or "
                            f"bool dtype, received dtype {value.dtype}")
        out[name] = value
    return out


def _layout(model) -> list[dict]:
    """Per layer: class, config without the (auto-numbered) name, and weight names/shapes."""
    out = []
    for layer in model.layers:
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        weights = [[k, list(np.shape(w)), str(np.asarray(w).dtype)]
                   for k, w in list(layer.params.items()) + list(layer.state.items())]
        out.append({"class": type(layer).__name__, "name": layer.name, "config": json_plain(config),
                    "weights": weights})
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckpointStore:
    """Checkpoints of one training run in ``directory`` (a local path or a ``file:`` URI),
    keeping the newest ``keep``."""

    def __init__(self, directory, keep: int = 3):
        self.keep = checks.integer(keep, "keep", "CheckpointStore", at_least=1, type_error=TypeError)
        self.directory = _local_dir(directory)

    def __repr__(self):
        return f"CheckpointStore({self.directory!r}, keep={self.keep})"

    # ---- listing ------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, str]]:
        """``(step, path)`` of the complete checkpoint files, oldest first."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            m = _NAME_RE.match(name)
            path = os.path.join(self.directory, name)
            if m and os.path.isfile(path):
                found.append((int(m.group(1)), path))
        return sorted(found)

    # ---- saving -------------------------------------------------------------------------------
    def save(self, model, step: int, meta: dict, arrays: dict | None = None) -> str:
        """Write the checkpoint of ``step`` and return its path; then drop checkpoints beyond
        the newest ``keep``. A checkpoint with a step above ``step`` (left by a run that was
        since resumed from an earlier one, or restarted) is superseded and removed, so that
        ``restore_latest`` never returns to it.

        ``meta`` must be JSON-serialisable (tuples come back as lists); ``arrays`` maps names
        to numeric numpy arrays, restored bit for bit.
        """
        step = checks.integer(step, "step", "CheckpointStore.save", at_least=0)
        if not getattr(model, "built", False):
            raise ValueError(f"CheckpointStore.save: expected a built model, received "
                             f"{type(model).__name__} {getattr(model, 'name', '')!r} that is not "
                             f"built (give its first layer an input_shape or train it first)")
        if not isinstance(meta, dict):
            raise TypeError(f"CheckpointStore.save: expected meta as a dict, received "
                            f"{type(meta).__name__}: {meta!r}")
        _check_json(meta, "", set())
        arrays = _check_arrays(arrays)

        model_doc, weights = model_to_bytes(model, _SAVE)
        extra = npz_bytes(arrays)
        members = {_MODEL: model_doc, _WEIGHTS: weights, _ARRAYS: extra}
        manifest = {"format": FORMAT, "version": VERSION, "step": step, "meta": meta,
                    "layout": _layout(model),
                    "members": {name: _sha(data) for name, data in members.items()}}
        manifest_bytes = json.dumps(manifest).encode()

        path = os.path.join(self.directory, checkpoint_name(step))
        self._write(path, step, list(members.items()) + [(_MANIFEST, manifest_bytes)])
        logger.debug("saved checkpoint %s (step %d, %d bytes)", os.path.basename(path), step,
                     os.path.getsize(path))
        self._prune(step)
        return path

    def _write(self, path: str, step: int, members: list[tuple[str, bytes]]) -> None:
        def write(f):
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, data in members:
                    zf.writestr(name, data)
        # The temporary name matches _TEMP_RE, so _prune removes what a killed writer left.
        atomic_write(path, write, prefix=f".ckpt-{step:08d}.", suffix=".tmp")

    def _prune(self, step: int) -> None:
        existing = self.checkpoints()
        superseded = [(s, p) for s, p in existing if s > step]
        current = [(s, p) for s, p in existing if s <= step]
        doomed = superseded + current[:-self.keep]
        for s, p in doomed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            if s > step:
                logger.info("removed checkpoint %s: superseded by the checkpoint of step %d",
                            os.path.basename(p), step)
        # Temporary files of writers that were killed before they could clean up.
        for name in os.listdir(self.directory):
            if _TEMP_RE.match(name):
                try:
                    os.unlink(os.path.join(self.directory, name))
                    logger.debug("removed stale temporary file %s", name)
                except OSError:
                    pass

    # ---- restoring ----------------------------------------------------------------------------
    def restore_latest(self, model, check=None) -> Checkpoint | None:
        """Restore the newest readable checkpoint into ``model`` (weights, moving statistics,
        optimizer config, slots and iterations) and return it; ``None`` when there is none.

        Unreadable checkpoints (truncated, corrupted) are skipped with a warning, falling back
        to older ones; if all are unreadable, ValueError. A checkpoint of a different
        architecture or optimizer raises ValueError and leaves ``model`` untouched, as does
        ``check(meta)`` raising (the caller's own test that the checkpoint fits its run).
        """
        if not getattr(model, "built", False):
            raise ValueError(f"CheckpointStore.restore_latest: expected a built model, received "
                             f"{type(model).__name__} {getattr(model, 'name', '')!r} that is not "
                             f"built")
        found = self.checkpoints()
        if not found:
            return None
        failures = []
        for step, path in reversed(found):
            try:
                loaded = _read(path, step)
            except _Unreadable as exc:
                failures.append((os.path.basename(path), str(exc)))
                continue
            name = os.path.basename(path)
            for bad, reason in failures:
                logger.warning("checkpoint %s is unreadable (%s); using %s", bad, reason, name)
            manifest, model_doc, weights, arrays = loaded
            if check is not None:
                check(manifest["meta"])
            _restore(model, manifest, model_doc, weights, path)
            logger.info("restored checkpoint %s (step %d)", name, step)
            return Checkpoint(step=step, meta=manifest["meta"], arrays=arrays, path=path)
        listing = "; ".join(f"{name}: {reason}" for name, reason in failures)
        raise ValueError(f"CheckpointStore.restore_latest: expected at least one readable "
                         f"checkpoint in {self.directory!r}, but all {len(failures)} are "
                         f"unreadable: {listing}")


def _read(path: str, step: int):
    """``(manifest, model.json document, weight arrays, extra arrays)`` of a checkpoint file,
    every member checked against its SHA-256; raises _Unreadable with the reason."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [n for n in (_MANIFEST, _MODEL, _WEIGHTS, _ARRAYS) if n not in names]
            if missing:
                raise _Unreadable(f"member {', '.join(missing)} is missing")
            data = {}
            for name in (_MANIFEST, _MODEL, _WEIGHTS, _ARRAYS):
                try:
                    data[name] = zf.read(name)
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    raise _Unreadable(f"member {name} is corrupted: {exc}") from None
    except _Unreadable:
        raise
    except FileNotFoundError:
        raise _Unreadable("the file disappeared") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise _Unreadable(f"not a complete zip file, truncated or corrupted: {exc}") from None
    try:
        manifest = json.loads(data[_MANIFEST])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unreadable(f"{_MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Unreadable(f"not a sparkdl checkpoint (expected format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise _Unreadable(f"format version {manifest.get('version')!r}; this sparkdl reads "
                          f"version {VERSION}")
    if manifest.get("step") != step:
        raise _Unreadable(f"it records step {manifest.get('step')!r}, its name says {step}")
    if not isinstance(manifest.get("meta"), dict) or not isinstance(manifest.get("layout"), list):
        raise _Unreadable(f"{_MANIFEST} has no meta or layout entry")
    recorded = manifest.get("members")
    if not isinstance(recorded, dict):
        raise _Unreadable(f"{_MANIFEST} has no members entry")
    for name in (_MODEL, _WEIGHTS, _ARRAYS):
        if recorded.get(name) != _sha(data[name]):
            raise _Unreadable(f"member {name} is corrupted (its SHA-256 does not match the one "
                              f"recorded at save time)")
    try:
        model_doc = check_document(data[_MODEL], data[_WEIGHTS], path, _RESTORE)
        weights = npz_arrays(data[_WEIGHTS], path, _RESTORE)
        arrays = npz_arrays(data[_ARRAYS], path, _RESTORE)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
    return manifest, model_doc, weights, arrays


def _describe_config_difference(a: dict, b: dict) -> str:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
        if x != y:
            return f"{k!r} is {x!r} in the checkpoint, {y!r} in the model"
    return "configs differ"


def _validate(model, manifest: dict, model_doc: dict, weights: dict, where: str) -> dict | None:
    """Raise ValueError naming the first difference between the checkpoint and ``model``;
    returns the optimizer state to restore (None for an uncompiled checkpoint)."""
    _check_layout(model, manifest["layout"], where)
    _check_weight_arrays(model, weights, where)
    return _optimizer_state(model, model_doc, weights, where)


def _check_layout(model, saved: list, where: str) -> None:
    """The same layers, weight names, shapes and configs, in the same order."""
    current = _layout(model)
    if len(saved) != len(current):
        raise ValueError(f"checkpoint {where} holds a model of {len(saved)} layers, the model "
                         f"'{model.name}' has {len(current)}")
    for i, (s, c) in enumerate(zip(saved, current)):
        who = f"layer {i} ('{s.get('name')}' in the checkpoint, '{c['name']}' in the model)"
        if s.get("class") != c["class"]:
            raise ValueError(f"checkpoint {where} holds a {s.get('class')} layer '{s.get('name')}' "
                             f"at position {i}, the model has a {c['class']} layer '{c['name']}'")
        sw, cw = s.get("weights") or [], c["weights"]
        if [w[0] for w in sw] != [w[0] for w in cw]:
            raise ValueError(f"checkpoint {where} holds weights {[w[0] for w in sw]} for {who}, "
                             f"the model has {[w[0] for w in cw]}")
        for (key, s_shape, _), (_, c_shape, _) in zip(sw, cw):
            if list(s_shape) != list(c_shape):
                raise ValueError(f"checkpoint {where} holds weights for '{s.get('name')}' "
                                 f"({key}) of shape {tuple(s_shape)}, the model has "
                                 f"{tuple(c_shape)} (layer '{c['name']}')")
        if s.get("config") != c["config"]:
            raise ValueError(f"checkpoint {where} holds a different {s.get('class')} for {who}: "
                             f"{_describe_config_difference(s.get('config') or {}, c['config'])}")


def _check_weight_arrays(model, weights: dict, where: str) -> None:
    stored, _ = split_arrays(weights)
    targets = model.weights
    if len(stored) != len(targets):
        raise ValueError(f"checkpoint {where} holds {len(stored)} weight arrays, the model "
                         f"'{model.name}' has {len(targets)}")
    for i, (s, t) in enumerate(zip(stored, targets)):
        if s.shape != t.shape or s.dtype != t.dtype:
            raise ValueError(f"checkpoint {where} holds weight array {i} of shape "
                             f"{s.shape} ({s.dtype}), the model has {t.shape} ({t.dtype})")


def _optimizer_state(model, model_doc: dict, weights: dict, where: str) -> dict | None:
    """The checkpoint's optimizer state, checked against the model's optimizer."""
    compile_doc = model_doc.get("compile")
    saved_opt = compile_doc.get("optimizer") if isinstance(compile_doc, dict) else None
    opt = model.optimizer
    if saved_opt is None and opt is None:
        return None
    if saved_opt is None:
        raise ValueError(f"checkpoint {where} holds no optimizer state (its model was not "
                         f"compiled), the model '{model.name}' has optimizer {opt.name!r}")
    # A registered optimizer class is recorded as {"class_name": registered name, "config": ...}.
    registered, saved_opt = custom_objects.split(saved_opt) if isinstance(saved_opt, dict) else (None, {})
    saved_name = registered or saved_opt.get("name")
    if opt is None:
        raise ValueError(f"checkpoint {where} holds the state of optimizer {saved_name!r}, the "
                         f"model '{model.name}' is not compiled")
    name = custom_objects.get_registered_name(opt) if custom_objects.is_registered(opt) else opt.name
    if saved_name != name:
        raise ValueError(f"checkpoint {where} holds the state of optimizer {saved_name!r}, the "
                         f"model '{model.name}' has optimizer {name!r}")
    try:
        type(opt).from_config(saved_opt)  # the config is valid for this optimizer class
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {where} holds an optimizer config {saved_opt!r} that "
                         f"{type(opt).__name__} does not accept: {exc}") from None
    _, state = split_arrays(weights)
    if "iterations" not in state:
        raise ValueError(f"checkpoint {where} holds no optimizer iterations")
    size = model.flat_weights.size
    for k, v in state.items():
        if k.startswith("slot/") and v.shape != (size,):
            raise ValueError(f"checkpoint {where} holds optimizer slot {k[5:]!r} of shape "
                             f"{v.shape}, the model has {size} trainable parameters")
    return state


def _restore(model, manifest: dict, model_doc: dict, weights: dict, path: str) -> None:
    where = os.path.basename(path)
    state = _validate(model, manifest, model_doc, weights, where)
    opt = model.optimizer
    # Everything was validated above; the backup only guards against the unforeseen.
    backup_weights = model.get_weights()
    backup_opt = dict(opt.__dict__) if opt is not None else None
    try:
        assign_weights(model, weights, path, _RESTORE)
        if state is not None:
            _, config = custom_objects.split(model_doc["compile"]["optimizer"])
            opt.apply_config(config)
            opt.set_state(state)
            if not any(k.startswith("slot/") for k in state):
                # Saved before the optimizer's first step: slots are allocated on the next one.
                opt.reset_slots()
    except BaseException:
        model.set_weights(backup_weights)
        if opt is not None:
            opt.__dict__.clear()
            opt.__dict__.update(backup_opt)
        raise
