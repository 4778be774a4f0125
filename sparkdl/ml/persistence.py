"""Saving and loading the ml stages with ``MLWriter``/``MLReader``.

A saved stage is a folder: ``metadata/`` (Spark's own JSON of the Params, written by
``DefaultParamsWriter``, so ``Pipeline`` and ``PipelineModel`` can load it) and ``model/``
holding the sparkdl model as ``model.json`` (architecture, compile settings, SHA-256 of the
weights) and ``weights.npz`` (binary arrays). A fitted model adds ``history.json``, its
training History (per-epoch logs, rounds, settings) as plain JSON. Files go through Hadoop's
FileSystem, so any path Spark can write (local, HDFS, S3...) works; nothing is pickled.
"""
from __future__ import annotations

import json

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

_MODEL_DIR, _CONFIG, _WEIGHTS, _HISTORY = "model", "model.json", "weights.npz", "history.json"
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


class _NNWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        from sparkdl.engine.serialization import model_to_bytes
        model = self.instance.getModel()
        if model is None:
            raise ValueError(f"{type(self.instance).__name__}.save: no model to save")
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        doc, weights = model_to_bytes(model, f"{type(self.instance).__name__}.save")
        # Weights first: a save cut short leaves a checksum mismatch, never a mixed model.
        write_bytes(self.sc, f"{path}/{_MODEL_DIR}/{_WEIGHTS}", weights)
        write_bytes(self.sc, f"{path}/{_MODEL_DIR}/{_CONFIG}", doc)
        history = getattr(self.instance, "history", None)
        if history is not None:
            write_bytes(self.sc, f"{path}/{_HISTORY}", history_bytes(history))


class _NNReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        from sparkdl.engine.serialization import model_from_bytes
        who = f"{self.cls.__name__}.load"
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        expected = f"{self.cls.__module__}.{self.cls.__name__}"
        if metadata.get("class") != expected:
            raise ValueError(f"{who}: {path!r} holds a {metadata.get('class')}, expected {expected}")
        doc = read_bytes(self.sc, f"{path}/{_MODEL_DIR}/{_CONFIG}", who)
        weights = read_bytes(self.sc, f"{path}/{_MODEL_DIR}/{_WEIGHTS}", who)
        model = model_from_bytes(doc, weights, f"{path}/{_MODEL_DIR}", who=who)
        instance = self.cls(model=model)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        if hasattr(instance, "history") and exists(self.sc, f"{path}/{_HISTORY}"):
            instance.history = history_from_bytes(read_bytes(self.sc, f"{path}/{_HISTORY}", who),
                                                  f"{path}/{_HISTORY}", who)
        return instance


class NNWritable(MLWritable):
    def write(self) -> MLWriter:
        return _NNWriter(self)


class NNReadable(MLReadable):
    @classmethod
    def read(cls) -> MLReader:
        return _NNReader(cls)
