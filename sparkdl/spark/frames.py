"""DataFrames and RDDs to cached training blocks: one contiguous ``(xs, y)`` per partition.

The driver checks the schema against the model before any job runs. Each partition is then
converted once, through Arrow batches (``mapInArrow``), into float32 arrays shaped like the
model's inputs, and the resulting RDD of blocks is cached; training rounds read those blocks
and never see a Row object.

A model whose input has an integer dtype (ids for an ``Embedding``) reads int64 instead: an
array or numeric columns give their values, and an ml Vector gives each row's active indices
(a sparse row's ``indices``, a dense row's non-zero positions), exactly ``prod(input shape)``
of them per row, in increasing order — so ``spark.read.format("libsvm")`` output, one active
index per field, feeds a Wide & Deep model without a UDF.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

_NUMERIC = ("ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType",
            "DecimalType", "BooleanType")


@dataclass
class ColumnPlan:
    """How to turn the selected columns of a batch into one array."""
    kind: str            # "vector", "array" or "columns"
    names: list[str]
    width: int | None    # expected values per row (None: read from the data)
    ids: bool = False    # integer model input: read int64 ids (a vector's active indices)


def _type_name(dtype) -> str:
    return type(dtype).__name__


def _is_ml_vector(dtype) -> bool:
    """Whether ``dtype`` is pyspark.ml's VectorUDT, without importing pyspark.ml (and SciPy
    with it: a fifth of a second in a fresh driver)."""
    cls = type(dtype)
    return cls.__name__ == "VectorUDT" and cls.__module__ == "pyspark.ml.linalg"


def _plan(schema, cols, width, who: str, what: str) -> ColumnPlan:
    """Check that ``cols`` exist and have usable types; describe how to read them."""
    from pyspark.sql.types import ArrayType

    names = [cols] if isinstance(cols, str) else list(cols)
    if not names or not all(isinstance(c, str) for c in names):
        raise TypeError(f"{who}: expected {what} as a column name or a list of column names, "
                        f"received {cols!r}")
    fields = {f.name: f.dataType for f in schema.fields}
    for name in names:
        if name not in fields:
            raise ValueError(f"{who}: the DataFrame has no {what} column {name!r} "
                             f"(columns: {sorted(fields)})")
    if len(names) > 1 or (isinstance(cols, (list, tuple))):
        for name in names:
            if _type_name(fields[name]) not in _NUMERIC:
                raise TypeError(f"{who}: {what} column {name!r} has type {fields[name].simpleString()}; "
                                f"a list of {what} columns must all be numeric")
        if width is not None and len(names) != width:
            raise ValueError(f"{who}: the model expects {width} {what} values, received "
                             f"{len(names)} columns {names}")
        return ColumnPlan("columns", names, len(names))
    dtype = fields[names[0]]
    if _is_ml_vector(dtype):
        return ColumnPlan("vector", names, width)
    if isinstance(dtype, ArrayType) and _type_name(dtype.elementType) in _NUMERIC:
        return ColumnPlan("array", names, width)
    if _type_name(dtype) in _NUMERIC:
        if width not in (None, 1):
            raise ValueError(f"{who}: {what} column {names[0]!r} holds one number per row, the model "
                             f"expects {width} values (use a vector or array column, or a list of columns)")
        return ColumnPlan("columns", names, 1)
    hint = "; index string labels first with pyspark.ml.feature.StringIndexer" \
        if what == "label" and _type_name(dtype) == "StringType" else ""
    raise TypeError(f"{who}: {what} column {names[0]!r} has type {dtype.simpleString()}; expected an "
                    f"ml Vector, an array of numbers, or numeric columns{hint}")


def is_integer_input(dtype) -> bool:
    """Whether a model input of ``dtype`` takes integer ids."""
    return np.issubdtype(np.dtype(dtype), np.integer)


def plan_columns(df, model, features_col, label_col, who: str = "SparkModel.fit"):
    """Validate the DataFrame against the model; return ``(features plan, label plan)``."""
    specs = model.input_specs()
    if len(specs) != 1:
        raise ValueError(f"{who}: DataFrames train single-input models; model '{model.name}' has "
                         f"{len(specs)} inputs (pass an RDD of ([x1, x2, ...], y) pairs instead)")
    shape, dtype = specs[0]
    width = int(np.prod(shape))
    features = _plan(df.schema, features_col, width, who, "features")
    features.ids = is_integer_input(dtype)
    label = None
    if label_col is not None:
        out_width = int(np.prod(model.output_shape))
        label = _plan(df.schema, label_col, None, who, "label")
        if label.kind == "columns" and len(label.names) > 1 and len(label.names) != out_width:
            raise ValueError(f"{who}: the model has {out_width} outputs, received {len(label.names)} label columns")
    return features, label


def batch_to_array(batch, plan: ColumnPlan, who: str) -> np.ndarray:
    """One Arrow record batch's columns of ``plan`` as a float32 ``(rows, width)`` array
    (int64 ids for ``plan.ids``)."""
    from sparkdl.data.arrow_blocks import (columns_to_dense, list_to_dense, vector_struct_to_dense,
                                           vector_struct_to_ids)

    if plan.kind == "columns":
        return columns_to_dense([batch.column(name) for name in plan.names], who, ids=plan.ids, names=plan.names)
    column = batch.column(plan.names[0])
    width = plan.width
    if width is None:
        width = _first_width(column, plan.kind)
    if repr(plan.names[0]) not in who:
        who = f"{who} (features column {plan.names[0]!r})"
    if plan.kind == "vector":
        if plan.ids:
            return vector_struct_to_ids(column, width, who)
        return vector_struct_to_dense(column, width, who)
    return list_to_dense(column, width, who, ids=plan.ids)


def _first_width(column, kind):
    if len(column) == 0:
        return 0
    first = column[0].as_py()
    if kind == "vector":
        return first["size"] if first["type"] == 0 else len(first["values"])
    return len(first)


def encode_block(x: np.ndarray, y: np.ndarray | None) -> bytes:
    """Arrays to bytes with np.save (no pickle) for the hop from Arrow into the RDD."""
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    if y is not None:
        np.save(buf, y, allow_pickle=False)
    return buf.getvalue()


def decode_block(data: bytes, with_label: bool):
    buf = io.BytesIO(data)
    x = np.load(buf, allow_pickle=False)
    y = np.load(buf, allow_pickle=False) if with_label else None
    return x, y


def check_values(x: np.ndarray, who: str, what: str) -> None:
    if not np.isfinite(x).all():
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{who}: {what} contain {bad} NaN or infinite values; expected finite numbers")


# ---- training blocks -----------------------------------------------------------------------
class Blocks:
    """A cached RDD with one ``(xs, y)`` block per partition, and what is known about it."""

    def __init__(self, rdd, rows_per_partition: list[int]):
        self.rdd = rdd
        self.rows = rows_per_partition
        self.max_rows = max(rows_per_partition) if rows_per_partition else 0
        self.empty_partitions = [i for i, r in enumerate(rows_per_partition) if r == 0]
        self.short_partitions: list = []
        self.kept = False          # held by the block cache for later fits: release() keeps it

    def note_batch_size(self, batch_size: int) -> None:
        self.short_partitions = [(i, r) for i, r in enumerate(self.rows) if 0 < r < batch_size]

    def release(self) -> None:
        if not self.kept:
            self.rdd.unpersist()


def barrier_ready(rdd) -> bool:
    """Whether a barrier stage may run over ``rdd``: Spark refuses one whose narrow ancestors
    (those in the same stage) have another number of partitions, e.g. after ``coalesce`` or
    ``union``; the blocks are then built after a shuffle."""
    top = rdd._jrdd.rdd()
    count = top.getNumPartitions()
    pending, seen = [top], set()
    while pending:
        node = pending.pop()
        if node.id() in seen:
            continue
        seen.add(node.id())
        if node.getNumPartitions() != count:
            return False
        deps = node.dependencies().iterator()
        while deps.hasNext():
            dep = deps.next()
            if dep.getClass().getName() != "org.apache.spark.ShuffleDependency":
                pending.append(dep.rdd())
    return True


def arrow_batch_rdd(df):
    """A Python RDD of ``df``'s Arrow record batches, straight from Spark's JVM Arrow writer:
    no SQL Python worker and no row hand-over, so a fresh application starts one Python
    worker pool instead of two (about 1.5 s of its first fit). None where Spark exposes no
    such RDD (Spark Connect)."""
    from pyspark import RDD
    from pyspark.serializers import NoOpSerializer
    from pyspark.sql.pandas.types import to_arrow_schema

    jdf = getattr(df, "_jdf", None)
    if jdf is None:
        return None
    conf = df.sparkSession.conf
    large = conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false").lower() == "true"
    schema = to_arrow_schema(df.schema, timezone=conf.get("spark.sql.session.timeZone"),
                             prefers_large_types=large)
    try:
        jrdd = jdf.toArrowBatchRdd().toJavaRDD()
    except Exception:  # noqa: BLE001 - py4j raises several classes for a missing method
        return None

    def read(serialized):
        import pyarrow as pa
        for data in serialized:
            yield pa.ipc.read_record_batch(pa.py_buffer(data), schema)
    return RDD(jrdd, df.sparkSession.sparkContext, NoOpSerializer()).mapPartitions(read)


@dataclass(frozen=True)
class Refusal:
    """Bad input found inside a task (a ``ValueError`` or ``TypeError`` of the conversion),
    carried back as the task's result: the job ends normally, the driver raises one clean
    exception, and no executor logs a stack trace per task attempt."""
    kind: str            # "ValueError" or "TypeError"
    message: str

    def error(self) -> Exception:
        return (TypeError if self.kind == "TypeError" else ValueError)(self.message)

    def encode(self) -> bytes:
        return f"{self.kind}\n{self.message}".encode()

    @staticmethod
    def decode(data: bytes) -> Refusal:
        kind, message = data.decode().split("\n", 1)
        return Refusal(kind, message)


def refusing(fn):
    """``fn`` returning a ``Refusal`` instead of raising a ValueError or TypeError."""
    def run(*args):
        try:
            return fn(*args)
        except (ValueError, TypeError) as exc:
            return Refusal(type(exc).__name__, str(exc))
    return run


def raise_refusal(results, cleanup=None) -> None:
    """Raise the first (in partition order) ``Refusal`` among a job's results, after
    ``cleanup``."""
    for result in results:
        if isinstance(result, Refusal):
            if cleanup is not None:
                cleanup()
            raise result.error()


def _python_error(exc: BaseException) -> BaseException:
    """The ValueError/TypeError a Python task raised, recovered from Spark's wrapper."""
    text = str(exc)
    for kind in (ValueError, TypeError):
        marker = f"{kind.__name__}: "
        at = text.rfind(marker)
        if at >= 0:
            line = text[at + len(marker):].splitlines()[0].strip()
            return kind(line)
    return exc


def _run_prep_job(fn, who):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - Spark wraps task errors in several classes
        mapped = _python_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def _label_who(who, label_plan) -> str:
    """The prefix of errors about labels: the operation and the label column(s)."""
    names = label_plan.names
    return f"{who} (label column{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))})"


def _target_converter(model, label_plan, who):
    loss, out_shape = model.loss, tuple(model.output_shape)
    where = _label_who(who, label_plan)

    def convert(y2d):
        # One number per row for a wider output: class ids (the cross-entropies one-hot them)
        # or, for another loss, a shape error that names (n,).
        y = y2d[:, 0] if y2d.ndim == 2 and y2d.shape[1] == 1 and out_shape != (1,) else y2d
        try:
            return loss.validate_targets(y, out_shape)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    return convert


def _block_converter(model, features, label, who):
    """The function turning one partition's Arrow record batches into its block ``([x], y)``."""
    (shape, dtype), = model.input_specs()
    width = int(np.prod(shape))
    to_targets = _target_converter(model, label, who) if label is not None else None

    def convert(batches):
        xs, ys = [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = batch_to_array(batch, features, who)
            check_values(x, who, f"features column {features.names}")
            xs.append(x)
            if label is not None:
                ys.append(batch_to_array(batch, label, _label_who(who, label)))
        x = np.concatenate(xs) if xs else np.zeros((0, width), dtype)
        if x.shape[1] != width:
            raise ValueError(f"{who}: the model expects {width} feature values per row "
                             f"(input shape {tuple(shape)}), received rows of {x.shape[1]}")
        x = x.reshape((-1,) + tuple(shape)).astype(dtype, copy=False)
        y = None
        if label is not None:
            y2d = np.concatenate(ys) if ys else np.zeros((0, 1), np.float32)
            check_values(y2d, who, f"label column {label.names}")
            assert to_targets is not None, "made above whenever there is a label"
            y = to_targets(y2d)
        return [x], y
    return convert


def dataframe_blocks(df, model, features_col, label_col, num_workers, who, cache=True) -> Blocks:
    """Convert ``df`` once into cached per-partition training blocks (one job)."""
    import pyarrow as pa
    from pyspark import StorageLevel

    if not model.built:
        raise ValueError(f"{who}: model '{model.name}' is not built; give it an input shape")
    features, label = plan_columns(df, model, features_col, label_col, who)
    convert = _block_converter(model, features, label, who)
    parts = num_workers or df.sparkSession.sparkContext.defaultParallelism
    selected = df.select(*(features.names + (label.names if label else [])))
    batches = arrow_batch_rdd(selected)
    probe = batches if batches is not None else selected.rdd
    if probe.getNumPartitions() != parts or not barrier_ready(probe):
        selected = selected.repartition(parts)
        batches = arrow_batch_rdd(selected)
    convert = refusing(convert)
    if batches is not None:
        rdd = batches.mapPartitions(lambda part: [convert(part)])
    else:                  # no RDD of Arrow batches: a mapInArrow's rows carry the blocks
        with_label = label is not None

        def encoded(batches):
            block = convert(batches)
            if isinstance(block, Refusal):
                yield pa.RecordBatch.from_pydict({"rows": [-1], "block": [block.encode()]})
                return
            xs, y = block
            yield pa.RecordBatch.from_pydict({"rows": [len(xs[0])], "block": [encode_block(xs[0], y)]})

        def decoded(row):
            if row.rows < 0:
                return Refusal.decode(row.block)
            x, y = decode_block(row.block, with_label)
            return [x], y
        rdd = selected.mapInArrow(encoded, "rows long, block binary").rdd.map(decoded)
    if cache:
        rdd.persist(StorageLevel.MEMORY_AND_DISK)
    rows = _run_prep_job(lambda: rdd.map(lambda b: b if isinstance(b, Refusal) else len(b[0][0])).collect(),
                         who)
    raise_refusal(rows, rdd.unpersist)
    total = sum(rows)
    if total == 0:
        rdd.unpersist()
        raise ValueError(f"{who}: the DataFrame is empty; expected at least one row")
    if total < parts:
        rdd.unpersist()
        raise ValueError(f"{who}: {parts} workers but only {total} rows; expected at least one row "
                         f"per worker (lower num_workers)")
    return Blocks(rdd, rows)


def to_simple_rdd(sc: SparkContext, x: npt.ArrayLike, y: npt.ArrayLike,
                  num_slices: int | None = None) -> RDD[tuple[np.ndarray, np.ndarray]]:
    """Elephas' shape: an RDD of ``(x_row, y_row)`` NumPy pairs from two arrays, in
    ``num_slices`` partitions (default: Spark's default parallelism, or more so that no task
    carries more than ``MAX_TASK_BYTES`` of the arrays, which Spark warns about)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"to_simple_rdd: expected len(x) == len(y), received {len(x)} and {len(y)}")
    if num_slices is None:
        needed = -(-(x.nbytes + y.nbytes) // MAX_TASK_BYTES)
        num_slices = max(sc.defaultParallelism, min(needed, max(len(x), 1)))
    return sc.parallelize(list(zip(x, y)), num_slices)


def rdd_blocks(rdd, model, num_workers, who, cache=True) -> Blocks:
    """Stack an RDD of ``(x, y)`` pairs (x an array or a list of arrays, one per model input)
    into cached per-partition blocks."""
    from pyspark import StorageLevel

    if not model.built:
        raise ValueError(f"{who}: model '{model.name}' is not built; give it an input shape")
    specs = model.input_specs()
    loss, out_shape = model.loss, tuple(model.output_shape)
    parts = num_workers or rdd.context.defaultParallelism
    if rdd.getNumPartitions() != parts or not barrier_ready(rdd):
        rdd = rdd.repartition(parts)

    def stack(pairs):
        xs_rows, ys = [], []
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"{who}: expected an RDD of (x, y) pairs, received {type(pair).__name__}")
            xs_rows.append(pair[0] if len(specs) > 1 else [pair[0]])
            ys.append(pair[1])
        xs = []
        for i, (shape, dtype) in enumerate(specs):
            arr = np.asarray([r[i] for r in xs_rows], dtype=dtype) if xs_rows else \
                np.zeros((0,) + tuple(shape), dtype)
            if arr.shape[1:] != tuple(shape):
                raise ValueError(f"{who}: expected x of shape {(None,) + tuple(shape)}, received rows "
                                 f"of shape {arr.shape[1:]}")
            if np.issubdtype(arr.dtype, np.floating):
                check_values(arr, who, "features")
            xs.append(arr)
        y = loss.validate_targets(np.asarray(ys), out_shape) if ys else \
            loss.validate_targets(np.zeros((0,) + (out_shape if out_shape != (1,) else ())), out_shape)
        return xs, y

    stack = refusing(stack)
    blocks = rdd.mapPartitions(lambda pairs: [stack(pairs)])
    if cache:
        blocks.persist(StorageLevel.MEMORY_AND_DISK)
    rows = _run_prep_job(lambda: blocks.map(lambda b: b if isinstance(b, Refusal) else len(b[1])).collect(), who)
    raise_refusal(rows, blocks.unpersist)
    if sum(rows) == 0:
        blocks.unpersist()
        raise ValueError(f"{who}: the RDD is empty; expected at least one (x, y) pair")
    if sum(rows) < parts:
        blocks.unpersist()
        raise ValueError(f"{who}: {parts} workers but only {sum(rows)} rows; expected at least one "
                         f"row per worker (lower num_workers)")
    return Blocks(blocks, rows)


# ---- inference on the executors --------------------------------------------------------------
def is_classifier(model) -> bool:
    return model.loss is not None and model.loss.name.endswith("crossentropy")


def class_count(model) -> int:
    """The classes a classifier tells apart: its output units, or 2 for one (sigmoid) unit."""
    units = int(np.prod(model.output_shape))
    return 2 if units == 1 else units


def predictions(model, x: np.ndarray, batch_size: int, thresholds=None):
    """``(prediction, rawPrediction, probability)`` of the rows ``x`` (shaped and typed as the
    model's input), as Spark's probabilistic classifiers define them.

    For a classifier (a crossentropy loss): ``probability`` is the outputs, ``[1 - p, p]`` for
    one unit; ``rawPrediction`` the margins, that is the logits the output's softmax is applied
    to, or ``[-z, z]`` for one sigmoid unit of logit ``z`` (the probability itself where the
    output has neither activation); ``prediction`` the class of the largest probability, or
    of the largest ``probability / thresholds`` (a threshold of 0 wins) when ``thresholds`` are
    given. For other models ``prediction`` is the outputs, ``(n,)`` for one unit, and the
    other two are None."""
    n = len(x)
    if not is_classifier(model):
        out = model.predict(x, batch_size=batch_size).reshape(n, -1) if n else \
            np.zeros((0, int(np.prod(model.output_shape))), np.float32)
        return (out[:, 0] if out.shape[1] == 1 else out).astype(np.float64), None, None
    logits, out = model.logits_and_outputs([x], batch_size)
    prob = out.reshape(n, -1).astype(np.float64)
    raw = prob if logits is None else logits.reshape(n, -1).astype(np.float64)
    if prob.shape[1] == 1:
        prob = np.concatenate([1 - prob, prob], axis=1)
        raw = prob if logits is None else np.concatenate([-raw, raw], axis=1)
    scores = prob
    if thresholds is not None:
        t = np.asarray(thresholds, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.where(t == 0, np.inf, prob / t)
    return scores.argmax(axis=1).astype(np.float64), raw, prob


def vector_rows(model, vectors, who: str) -> np.ndarray:
    """ml Vectors as the model's input array, converted exactly as a features column of them
    is (dense and sparse; active indices for an integer input)."""
    import pyarrow as pa
    from pyspark.ml.linalg import Vector, VectorUDT

    for v in vectors:
        if not isinstance(v, Vector):
            raise TypeError(f"{who}: expected an ml Vector (pyspark.ml.linalg), received "
                            f"{type(v).__name__}: {v!r}")
    udt = VectorUDT()
    struct = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                        ("values", pa.list_(pa.float64()))])
    rows = [dict(zip(("type", "size", "indices", "values"), udt.serialize(v))) for v in vectors]
    batch = pa.RecordBatch.from_arrays([pa.array(rows, type=struct)], names=["features"])
    (shape, dtype), = model.input_specs()
    plan = ColumnPlan("vector", ["features"], int(np.prod(shape)), ids=is_integer_input(dtype))
    x = batch_to_array(batch, plan, who)
    check_values(x, who, "features")
    return x.reshape((-1,) + tuple(shape)).astype(dtype, copy=False)


def predict_frame(df, model, features_col, prediction_col, probability_col, batch_size,
                  raw_prediction_col=None, thresholds=None, who="SparkModel.predict"):
    """``df`` plus a ``prediction`` column (and ``probability`` for classifiers, and
    ``rawPrediction`` when asked), computed on the executors from Arrow batches with the model
    broadcast once. New columns come in Spark's order: rawPrediction, probability, prediction
    (see ``predictions`` for what they hold)."""
    import pyarrow as pa

    from sparkdl.spark import executor

    features, _ = plan_columns(df, model, features_col, None, who)
    existing = set(df.columns)
    for col in (prediction_col, probability_col, raw_prediction_col):
        if col and col in existing:
            raise ValueError(f"{who}: the DataFrame already has a column {col!r}")
    (shape, dtype), = model.input_specs()
    classifier = is_classifier(model)
    outputs = (prediction_col, raw_prediction_col if classifier else None,
               probability_col if classifier else None)
    schema = _prediction_schema(df.schema, classifier or int(np.prod(model.output_shape)) == 1, *outputs)
    model_bc = executor.ModelBroadcast(df.sparkSession.sparkContext, model)

    def run(batches):
        executor.use_task_cpus()
        m = executor.cached_model(model_bc)
        for batch in batches:
            x = batch_to_array(batch, features, who).reshape((-1,) + tuple(shape)).astype(dtype, copy=False)
            added = _output_columns(predictions(m, x, batch_size, thresholds), *outputs)
            yield pa.RecordBatch.from_arrays(list(batch.columns) + [c for _, c in added],
                                             names=list(batch.schema.names) + [n for n, _ in added])

    return df.mapInArrow(run, schema)


def _prediction_schema(schema, scalar: bool, prediction_col, raw_prediction_col, probability_col):
    """The input schema plus, when named, rawPrediction and probability vectors, and the
    prediction (a double, or an array of them for a multi-output regressor)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

    fields = list(schema.fields)
    fields += [StructField(col, VectorUDT(), True) for col in (raw_prediction_col, probability_col) if col]
    fields.append(StructField(prediction_col, DoubleType() if scalar else ArrayType(DoubleType(), False), True))
    return StructType(fields)


def _output_columns(predicted, prediction_col, raw_prediction_col, probability_col):
    """``[(name, Arrow array)]`` of one batch's ``predictions``, in the schema's order."""
    import pyarrow as pa

    pred, raw, prob = predicted
    columns = [(col, _dense_vectors(values)) for col, values in
               ((raw_prediction_col, raw), (probability_col, prob)) if col and values is not None]
    if pred.ndim == 1:
        return columns + [(prediction_col, pa.array(pred, pa.float64()))]
    return columns + [(prediction_col, pa.FixedSizeListArray.from_arrays(
        pa.array(pred.reshape(-1)), pred.shape[1]).cast(pa.list_(pa.float64())))]


def _dense_vectors(values: np.ndarray):
    """An Arrow array of dense ml Vectors (the struct Spark's VectorUDT uses)."""
    import pyarrow as pa
    n, width = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    vals = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float64()))
    return pa.StructArray.from_arrays(
        [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()), pa.nulls(n, pa.list_(pa.int32())), vals],
        names=["type", "size", "indices", "values"])


def _add_scores(model, metrics, xs, y, batch_size) -> float:
    """Update ``metrics`` with the inference-mode outputs of ``(xs, y)``, batch by batch;
    returns the loss summed over the rows."""
    loss_sum = 0.0
    for a in range(0, len(y), batch_size):
        out = model.predict([x[a:a + batch_size] for x in xs], batch_size=batch_size)
        loss_sum += float(np.sum(model.loss.per_sample(y[a:a + batch_size], out)))
        for met in metrics:
            met.update(y[a:a + batch_size], out)
    return loss_sum


def _combined_scores(model, parts, who: str, what: str) -> dict:
    """``{"loss": ..., metric: ...}`` from each partition's ``(loss sum, rows, metric states)``."""
    loss_sum, count = 0.0, 0
    mets = [x.fresh() for x in model.metrics]
    for part_loss, part_count, states in parts:
        loss_sum += part_loss
        count += part_count
        for met, st in zip(mets, states):
            met.merge_state(st)
    if count == 0:
        raise ValueError(f"{who}: {what} is empty; expected at least one row")
    result = {"loss": loss_sum / count}
    result.update({met.name: met.result() for met in mets})
    return result


def evaluate_frame(df, model, features_col, label_col, batch_size) -> dict:
    """Loss and compiled metrics over ``df``, computed per partition on the executors; the
    driver adds up one small state per partition."""
    import pickle

    from sparkdl.spark import executor

    who = "SparkModel.evaluate"
    if model.loss is None:
        raise ValueError(f"{who}: the model has no loss; compile it first")
    features, label = plan_columns(df, model, features_col, label_col, who)
    to_targets = _target_converter(model, label, who)
    (shape, dtype), = model.input_specs()
    sc = df.sparkSession.sparkContext
    model_bc = executor.ModelBroadcast(sc, model)

    def run(batches):
        import pyarrow as pa
        state = refusing(evaluate_partition)(batches)
        data = state.encode() if isinstance(state, Refusal) else pickle.dumps(state)
        yield pa.RecordBatch.from_pydict({"refused": [isinstance(state, Refusal)], "state": [data]})

    def evaluate_partition(batches):
        executor.use_task_cpus()
        m = executor.cached_model(model_bc)
        mets = [x.fresh() for x in m.metrics]
        loss_sum, count = 0.0, 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = batch_to_array(batch, features, who)
            check_values(x, who, "features")
            x = x.reshape((-1,) + tuple(shape)).astype(dtype, copy=False)
            y = to_targets(batch_to_array(batch, label, _label_who(who, label)))
            loss_sum += _add_scores(m, mets, [x], y, batch_size)
            count += len(x)
        return loss_sum, count, [met.state for met in mets]

    selected = df.select(*(features.names + label.names))
    try:
        rows = _run_prep_job(lambda: selected.mapInArrow(run, "refused boolean, state binary").collect(), who)
    finally:
        model_bc.destroy()
    raise_refusal([Refusal.decode(row.state) for row in rows if row.refused])
    return _combined_scores(model, [pickle.loads(row.state) for row in rows], who, "the DataFrame")


def evaluate_blocks(rdd, model, batch_size: int, who: str) -> dict:
    """Loss and compiled metrics over an RDD of blocks ``([x, ...], y)`` (the rows a fit holds
    out with ``validation_split``), one small state per partition added up on the driver."""
    from sparkdl.spark import executor

    model_bc = executor.ModelBroadcast(rdd.context, model)

    def run(blocks):
        executor.use_task_cpus()
        m = executor.cached_model(model_bc)
        mets = [x.fresh() for x in m.metrics]
        loss_sum, count = 0.0, 0
        for xs, y in blocks:
            if len(y):
                loss_sum += _add_scores(m, mets, xs, y, batch_size)
                count += len(y)
        yield loss_sum, count, [met.state for met in mets]

    try:
        parts = _run_prep_job(lambda: rdd.mapPartitions(run).collect(), who)
    finally:
        model_bc.destroy()
    return _combined_scores(model, parts, who, "the validation data")


# ---- rows held out for validation ------------------------------------------------------------
def held_out_rows(rows: int, validation_split: float) -> int:
    """How many of a partition's ``rows`` ``validation_split`` holds out: its last
    ``rows - int(rows * (1 - validation_split))``, as Keras holds out the last fraction."""
    return rows - int(rows * (1 - validation_split))


def split_blocks(blocks: Blocks, validation_split: float) -> tuple[Blocks, Blocks]:
    """``(training blocks, validation blocks)``: each partition's block cut before its last
    ``held_out_rows``. Both read ``blocks``' cached RDD (no job runs, nothing more is cached),
    so releasing ``blocks`` releases them."""
    def head(block):
        xs, y = block
        at = len(y) - held_out_rows(len(y), validation_split)
        return [x[:at] for x in xs], y[:at]

    def tail(block):
        xs, y = block
        at = len(y) - held_out_rows(len(y), validation_split)
        return [x[at:] for x in xs], y[at:]

    held = [held_out_rows(r, validation_split) for r in blocks.rows]
    train = Blocks(blocks.rdd.map(head, preservesPartitioning=True), [r - h for r, h in zip(blocks.rows, held)])
    val = Blocks(blocks.rdd.map(tail, preservesPartitioning=True), held)
    train.kept = val.kept = True       # nothing of their own to unpersist
    return train, val


# ---- prediction of an RDD of feature rows ----------------------------------------------------------
def predict_rdd(rdd, model, batch_size: int, who: str = "SparkModel.predict") -> np.ndarray:
    """The model's outputs for an RDD whose elements are one example's features each (an
    array or a list of numbers; for a model of several inputs, a list of one array per
    input), computed on the executors with the model broadcast once, in the RDD's order."""
    from sparkdl.engine.data_adapter import to_input_list
    from sparkdl.spark import executor

    if not model.built:
        raise ValueError(f"{who}: model '{model.name}' is not built; give it an input shape")
    specs = model.input_specs()
    out_shape = tuple(model.output_shape)
    model_bc = executor.ModelBroadcast(rdd.context, model)

    def run(rows):
        rows = list(rows)
        if not rows:
            return
        executor.use_task_cpus()
        m = executor.cached_model(model_bc)
        yield m.predict(to_input_list(_stack_rows(rows, specs, who), specs, who), batch_size=batch_size)

    try:
        parts = _run_prep_job(lambda: rdd.mapPartitions(run).collect(), who)
    finally:
        model_bc.destroy()
    if not parts:
        return np.zeros((0,) + out_shape, np.float32)
    return np.concatenate(parts)


def _stack_rows(rows: list, specs, who: str) -> list[np.ndarray]:
    """One partition's feature rows as one array per model input."""
    expected = " and ".join(str((None,) + tuple(shape)) for shape, _ in specs)
    try:
        if len(specs) == 1:
            return [np.asarray(rows)]
        if not all(isinstance(r, (list, tuple)) and len(r) == len(specs) for r in rows):
            bad = next(r for r in rows if not (isinstance(r, (list, tuple)) and len(r) == len(specs)))
            raise TypeError(f"{who}: expected each element of the RDD to be a list of {len(specs)} "
                            f"arrays (one per model input), received {type(bad).__name__}")
        return [np.asarray([r[i] for r in rows]) for i in range(len(specs))]
    except ValueError as exc:     # rows of different lengths, or (x, y) pairs
        raise ValueError(f"{who}: expected each element of the RDD to be one example's features "
                         f"(inputs of shape {expected}), received rows NumPy cannot stack: {exc}") from None


#: Most bytes of Arrow data from_arrays puts into one task (Spark warns above 1000 KiB per task).
MAX_TASK_BYTES = 512 * 1024
#: from_arrays' column of row numbers, dropped once the repartitioned rows are sorted by it
_ROW = "__sparkdl_row"


def from_arrays(spark: SparkSession, x: npt.ArrayLike, y: npt.ArrayLike | None = None, features_col: str = "features",
                label_col: str = "label", num_partitions: int | None = None) -> DataFrame:
    """A DataFrame with an ``array<float>`` features column (rows flattened; ``array<bigint>``
    for integer ``x``, such as an Embedding's ids) and a numeric or array label column, built
    through one Arrow table (fast: no per-row Python objects).

    The rows travel inside Spark's tasks, so arrays larger than ``MAX_TASK_BYTES`` are cut into
    Arrow batches of at most that size, one partition each (``spark.createDataFrame`` would
    otherwise keep them as one local relation and ship ``1/defaultParallelism`` of the arrays in
    each task, which Spark warns about above 1000 KiB). ``num_partitions`` redistributes them
    (round robin) and keeps each partition's rows in their order in ``x``; without it a large
    array keeps one partition per batch, in row order.
    """
    import pyarrow as pa

    x = np.asarray(x)
    kind = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32
    x = np.ascontiguousarray(x, dtype=kind)
    width = int(np.prod(x.shape[1:]))
    columns = {features_col: pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), width)
               .cast(pa.list_(pa.from_numpy_dtype(kind)))}
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"from_arrays: expected len(y) == len(x), received {len(y)} and {len(x)}")
        if y.ndim == 1:
            columns[label_col] = pa.array(y.astype(np.float64))
        else:
            k = int(np.prod(y.shape[1:]))
            columns[label_col] = pa.FixedSizeListArray.from_arrays(
                pa.array(y.reshape(-1).astype(np.float64)), k).cast(pa.list_(pa.float64()))
    if num_partitions:
        columns[_ROW] = pa.array(np.arange(len(x), dtype=np.int64))
    table = pa.table(columns)
    if table.nbytes <= MAX_TASK_BYTES:
        df = spark.createDataFrame(table)
    else:
        rows_per_batch = max(1, MAX_TASK_BYTES * table.num_rows // table.nbytes)
        table = pa.Table.from_batches(table.to_batches(max_chunksize=rows_per_batch))
        # Tables under this threshold (48 MiB by default) become one local relation, split into
        # defaultParallelism tasks; above it, each Arrow batch is a partition of its own.
        key = "spark.sql.execution.arrow.localRelationThreshold"
        previous = spark.conf.get(key, None)
        spark.conf.set(key, "0")
        try:
            df = spark.createDataFrame(table)
        finally:
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)
    if not num_partitions:
        return df
    # A shuffle's reader takes the map outputs in the order they arrive (local ones first), so
    # on a cluster, or after a lost executor's partitions are recomputed, a partition's rows
    # would come in another order, and the seeded mini-batches would differ from local[n]'s.
    return df.repartition(num_partitions).sortWithinPartitions(_ROW).drop(_ROW)
