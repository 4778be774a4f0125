"""Saving and loading a SparkModel: its model and its settings, in one file or a directory.

``spark_model.save(path)`` writes what ``model.save(path)`` writes (``model.json``:
architecture, compile settings, the weights' SHA-256; ``weights.npz``: weights and optimizer
state) plus ``spark_model.json``: the SparkModel's settings (``SparkModel.get_config()``) and
the SHA-256 of the ``model.json`` they belong to. As for models, ``path`` is a single zip file
unless it is an existing directory, which then receives the three files. The zip is written
in one atomic write; in a directory each file is written atomically, weights first and
settings last, so a save cut short is reported on loading (by a checksum), never loaded
mixed. Nothing is pickled, and ``sparkdl.models.load_model(path)`` reads the model of either
form. ``load_spark_model(path)`` rebuilds the model through ``sparkdl.models.load_model``
(``custom_objects`` and registered classes included) and the SparkModel from the settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import TYPE_CHECKING, Any

from sparkdl.engine.files import write_files

if TYPE_CHECKING:
    from sparkdl.spark.spark_model import SparkModel

FORMAT = "sparkdl.spark_model"
VERSION = 1
_SETTINGS, _CONFIG, _WEIGHTS = "spark_model.json", "model.json", "weights.npz"


def save_spark_model(spark_model: SparkModel, path: str | os.PathLike[str]) -> None:
    """Write ``spark_model``'s model and settings to ``path`` (see the module docstring)."""
    from sparkdl.engine.serialization import model_to_bytes

    path = os.fspath(path)
    doc, weights = model_to_bytes(spark_model.model, "SparkModel.save")
    settings = json.dumps({"format": FORMAT, "version": VERSION, "class_name": "SparkModel",
                           "config": spark_model.get_config(),
                           "model": {"file": _CONFIG, "sha256": hashlib.sha256(doc).hexdigest()}},
                          indent=1).encode()
    # Settings last: they hold the model document's checksum, which holds the weights'.
    write_files(path, {_WEIGHTS: weights, _CONFIG: doc, _SETTINGS: settings})


def load_spark_model(path: str | os.PathLike[str], custom_objects: dict[str, Any] | None = None) -> SparkModel:
    """The SparkModel saved at ``path`` by ``spark_model.save(path)``: its model (loaded with
    ``sparkdl.models.load_model(path, custom_objects=...)``, compiled, with its optimizer
    state) and its settings."""
    from sparkdl.models import load_model
    from sparkdl.spark.spark_model import SparkModel

    who = "load_spark_model"
    path = os.fspath(path)
    model = load_model(path, custom_objects=custom_objects)      # FileNotFoundError, damaged model
    raw_settings, raw_doc = _read(path, who)
    settings = _check_settings(raw_settings, raw_doc, path, who)
    config = settings["config"]
    if not isinstance(config, dict):
        raise ValueError(f"{who}: {_SETTINGS} in {path!r} is corrupted (its config is not an object)")
    return SparkModel(model, **config)


def _read(path: str, who: str) -> tuple[bytes, bytes]:
    """``(spark_model.json, model.json)`` bytes of the save at ``path``."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, _SETTINGS), "rb") as f:
                settings = f.read()
            with open(os.path.join(path, _CONFIG), "rb") as f:
                return settings, f.read()
        with zipfile.ZipFile(path) as zf:
            return zf.read(_SETTINGS), zf.read(_CONFIG)
    except (KeyError, FileNotFoundError):
        raise ValueError(f"{who}: {path!r} holds a model but no SparkModel settings (expected "
                         f"{_SETTINGS}, written by SparkModel.save); load it with "
                         f"sparkdl.models.load_model and wrap it in SparkModel(...)") from None


def _check_settings(raw: bytes, raw_doc: bytes, path: str, who: str) -> dict:
    try:
        settings = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{who}: {_SETTINGS} in {path!r} is corrupted (invalid JSON: {exc})") from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ValueError(f"{who}: {_SETTINGS} in {path!r} is not a saved SparkModel's (expected "
                         f"format {FORMAT!r})")
    if settings.get("version") != VERSION:
        raise ValueError(f"{who}: {path!r} has SparkModel format version {settings.get('version')!r}; "
                         f"this sparkdl reads version {VERSION}")
    recorded = settings.get("model", {}).get("sha256") if isinstance(settings.get("model"), dict) else None
    if recorded != hashlib.sha256(raw_doc).hexdigest():
        raise ValueError(f"{who}: the settings in {path!r} belong to another save of its {_CONFIG} "
                         f"(the SHA-256 recorded in {_SETTINGS} does not match); save again")
    return settings
