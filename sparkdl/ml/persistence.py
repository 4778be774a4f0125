"""Saving and loading the ml stages with ``MLWriter``/``MLReader``.

A saved stage is a folder: ``metadata/`` (Spark's own JSON of the Params, written by
``DefaultParamsWriter``, so ``Pipeline`` and ``PipelineModel`` can load it) and ``model/``
holding the sparkdl model as ``model.json`` (architecture, compile settings, SHA-256 of the
weights) and ``weights.npz`` (binary arrays). A fitted model adds ``history.json``, its
training History (per-epoch logs, rounds, settings) as plain JSON. The metadata is written
first, then the weights before ``model.json``: a save cut short leaves a checksum mismatch,
never a mixed model. Nothing is pickled.

On a classic session the files go through Hadoop's FileSystem, so any path Spark can write
(local, HDFS, S3...) works. On a Spark Connect session (the writer's or reader's session,
``is_connect``) there is no SparkContext to reach Hadoop with: the client writes and reads the
whole folder, metadata included, with Python's file IO on its own file system, in the same
layout (``metadata/part-00000-<uuid>-c000.txt`` holding the JSON line, and ``_SUCCESS``), so a
folder saved on either kind of session loads on the other. Each file is then written
atomically (a hidden temporary file renamed over it). The path must be a plain path or a
``file:`` URI; any other scheme (``hdfs://``, ``s3a://``...) is refused with a ValueError
before anything is written (save from a classic session, or to a local path). ``overwrite()``
deletes the folder first, and without it a folder that already holds a stage's metadata raises
an ``AnalysisException`` (PATH_ALREADY_EXISTS), as on classic. A ``Pipeline`` or
``PipelineModel`` saved on Connect writes its own metadata through the Connect server (pyspark's
writer) and its sparkdl stages from the client, so it round trips where the client and the
server see the same files (a local server, a shared mount).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

logger = logging.getLogger(__name__)

_METADATA, _MODEL_DIR, _CONFIG, _WEIGHTS, _HISTORY = "metadata", "model", "model.json", "weights.npz", "history.json"
#: What a History holds besides its per-epoch logs (SparkModel.fit sets them all).
_HISTORY_FIELDS = ("epoch", "rounds", "settings", "rows_per_partition", "short_partitions",
                   "empty_partitions", "resumed_from", "data_seconds")


def _hadoop_path(sc, path: str):
    jvm = sc._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(sc._jsc.hadoopConfiguration())


def write_bytes(sc, path: str, data: bytes) -> None:
    p, fs = _hadoop_path(sc, path)
    out = fs.create(p, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def exists(sc, path: str) -> bool:
    p, fs = _hadoop_path(sc, path)
    return bool(fs.exists(p))


def read_bytes(sc, path: str, what: str) -> bytes:
    p, fs = _hadoop_path(sc, path)
    if not fs.exists(p):
        raise ValueError(f"{what}: missing file {path!r}")
    stream = fs.open(p)
    try:
        return bytes(sc._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def history_bytes(history) -> bytes:
    """A History as JSON: its ``history`` dict and the fields of ``_HISTORY_FIELDS`` it has."""
    from sparkdl.engine.files import json_plain
    doc = {"history": history.history}
    doc.update({name: getattr(history, name) for name in _HISTORY_FIELDS if hasattr(history, name)})
    return json.dumps(json_plain(doc)).encode("utf-8")


def history_from_bytes(data: bytes, where: str, who: str):
    """The History ``history_bytes`` wrote; ValueError naming the file if it is not that."""
    from sparkdl.engine.callbacks import History
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{who}: {where!r} is corrupted (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("history"), dict):
        raise ValueError(f"{who}: {where!r} is corrupted (expected an object with a 'history' object)")
    history = History()
    history.history = doc["history"]
    for name in _HISTORY_FIELDS:
        if name in doc:
            setattr(history, name, doc[name])
    return history


class _HadoopFiles:
    """A classic session's files: the stage's folder through Hadoop's FileSystem on the JVM,
    its metadata through ``DefaultParamsWriter``/``DefaultParamsReader``."""

    def __init__(self, sc):
        self.sc = sc

    def save_metadata(self, instance, path: str) -> None:
        DefaultParamsWriter.saveMetadata(instance, path, self.sc)

    def load_metadata(self, path: str, who: str) -> dict:
        return DefaultParamsReader.loadMetadata(path, self.sc)

    def write(self, path: str, data: bytes) -> None:
        write_bytes(self.sc, path, data)

    def exists(self, path: str) -> bool:
        return exists(self.sc, path)

    def read(self, path: str, who: str) -> bytes:
        return read_bytes(self.sc, path, who)


class _LocalFiles:
    """A Connect session's files: the stage's folder, metadata included, with Python's file IO
    on the client's file system, in the layout ``DefaultParamsWriter`` gives on a classic
    session (``metadata/part-00000-<uuid>-c000.txt`` holding the one JSON line, and an empty
    ``_SUCCESS``), so that either session loads what the other saved. Each file is written
    atomically (a hidden temporary file renamed over it)."""

    def __init__(self, session):
        self.session = session

    def save_metadata(self, instance, path: str) -> None:
        from sparkdl.engine.files import atomic_write
        metadata = DefaultParamsWriter._get_metadata_to_save(instance, self.session)
        folder = os.path.join(path, _METADATA)
        atomic_write(os.path.join(folder, f"part-00000-{uuid.uuid4()}-c000.txt"),
                     (metadata + "\n").encode("utf-8"))
        atomic_write(os.path.join(folder, "_SUCCESS"), b"")

    def load_metadata(self, path: str, who: str) -> dict:
        folder = os.path.join(path, _METADATA)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            raise ValueError(f"{who}: no stage metadata at {folder!r} (missing or unreadable)") from None
        # What spark.read.text(folder).first() reads: the first line of the data files, which
        # are the ones whose names start with neither "_" nor "."
        for name in names:
            if name.startswith(("_", ".")) or not os.path.isfile(os.path.join(folder, name)):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                line = f.readline().rstrip("\r\n")
            if line:
                return DefaultParamsReader._parseMetaData(line)
        raise ValueError(f"{who}: no stage metadata at {folder!r} (no data file holds a line)")

    def write(self, path: str, data: bytes) -> None:
        from sparkdl.engine.files import atomic_write
        atomic_write(path, data)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str, who: str) -> bytes:
        if not os.path.isfile(path):
            raise ValueError(f"{who}: missing file {path!r}")
        with open(path, "rb") as f:
            return f.read()


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def local_path(path: str, who: str) -> str:
    """The client's file system path a Connect session saves ``path`` to or loads it from: a
    plain path as it is, a ``file:`` URI (``file:/p``, ``file:///p``, ``file://localhost/p``)
    as its path, taken literally as Hadoop's Path takes it. Any other scheme: ValueError."""
    if not isinstance(path, str):
        raise TypeError(f"{who}: path should be a string, got {type(path).__name__}")
    match = _SCHEME.match(path)
    scheme = match.group(1) if match else ""
    if len(scheme) <= 1:            # no scheme (a one-letter one is a Windows drive)
        return path
    rest = path[len(scheme) + 1:]
    authority = ""
    if rest.startswith("//"):
        cut = rest.find("/", 2)
        authority, rest = (rest[2:], "") if cut < 0 else (rest[2:cut], rest[cut:])
    if scheme.lower() == "file" and authority in ("", "localhost") and rest:
        return rest
    raise ValueError(
        f"{who}: on a Spark Connect session a sparkdl stage is saved and loaded by the client, with "
        f"Python's file IO, so it expects a local path or a file: URI (file:/..., file:///...), got "
        f"{path!r}; save it from a classic session (SparkSession with a SparkContext) to reach "
        f"{scheme}:// storage, or save it to a local path")


def _already_exists(path: str) -> Exception:
    """What a classic session raises when a stage is saved without overwrite over a saved one."""
    from pyspark.errors import AnalysisException
    return AnalysisException(
        message=f"[PATH_ALREADY_EXISTS] Path {path} already exists. To overwrite it, use "
                "write().overwrite().save(path).")


def _remove(path: str) -> None:
    """Delete ``path`` (a folder recursively), as ``overwrite()`` does on a classic session."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


class _NNWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        from sparkdl.spark.connect import is_connect
        session = self.sparkSession
        if not is_connect(session):
            super().save(path)
            return
        # MLWriter.save's overwrite and Spark's metadata writer both go through the JVM: here
        # the client checks and removes, before anything is written.
        who = f"{type(self.instance).__name__}.save"
        local = local_path(path, who)
        self._model(who)
        if self.shouldOverwrite:
            if os.path.lexists(local):
                logger.info("%s: overwriting %s", who, local)
            _remove(local)
        elif os.path.exists(os.path.join(local, _METADATA)):
            raise _already_exists(os.path.abspath(os.path.join(local, _METADATA)))
        self._save(_LocalFiles(session), local)

    def saveImpl(self, path: str) -> None:
        self._save(_HadoopFiles(self.sc), path)

    def _model(self, who: str):
        model = self.instance.getModel()
        if model is None:
            raise ValueError(f"{who}: no model to save")
        return model

    def _save(self, files, path: str) -> None:
        from sparkdl.engine.serialization import model_to_bytes
        who = f"{type(self.instance).__name__}.save"
        model = self._model(who)
        files.save_metadata(self.instance, path)
        doc, weights = model_to_bytes(model, who)
        # Weights first: a save cut short leaves a checksum mismatch, never a mixed model.
        files.write(f"{path}/{_MODEL_DIR}/{_WEIGHTS}", weights)
        files.write(f"{path}/{_MODEL_DIR}/{_CONFIG}", doc)
        history = getattr(self.instance, "history", None)
        if history is not None:
            files.write(f"{path}/{_HISTORY}", history_bytes(history))


class _NNReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        from sparkdl.engine.serialization import model_from_bytes
        from sparkdl.spark.connect import is_connect
        who = f"{self.cls.__name__}.load"
        session = self.sparkSession
        files: _HadoopFiles | _LocalFiles
        if is_connect(session):
            path = local_path(path, who)
            files = _LocalFiles(session)
        else:
            files = _HadoopFiles(self.sc)
        metadata = files.load_metadata(path, who)
        expected = f"{self.cls.__module__}.{self.cls.__name__}"
        if metadata.get("class") != expected:
            raise ValueError(f"{who}: {path!r} holds a {metadata.get('class')}, expected {expected}")
        doc = files.read(f"{path}/{_MODEL_DIR}/{_CONFIG}", who)
        weights = files.read(f"{path}/{_MODEL_DIR}/{_WEIGHTS}", who)
        model = model_from_bytes(doc, weights, f"{path}/{_MODEL_DIR}", who=who)
        instance = self.cls(model=model)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        if hasattr(instance, "history") and files.exists(f"{path}/{_HISTORY}"):
            instance.history = history_from_bytes(files.read(f"{path}/{_HISTORY}", who),
                                                  f"{path}/{_HISTORY}", who)
        return instance


class NNWritable(MLWritable):
    def write(self) -> MLWriter:
        return _NNWriter(self)


class NNReadable(MLReadable):
    @classmethod
    def read(cls) -> MLReader:
        return _NNReader(cls)
