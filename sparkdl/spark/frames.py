"""DataFrame columns to arrays, checked against a model.

The driver checks the columns against the model before any job runs (``plan_columns``); tasks
read each Arrow record batch into float32 arrays shaped like the model's inputs
(``batch_to_array``), or int64 ids for a model whose input has an integer dtype (ids for an
``Embedding``): an array or numeric columns give their values, and an ml Vector gives each
row's active indices (a sparse row's ``indices``, a dense row's non-zero positions), exactly
``prod(input shape)`` of them per row, in increasing order — so
``spark.read.format("libsvm")`` output, one active index per field, feeds a Wide & Deep model
without a UDF. Bad input a task finds comes back as its result (``Refusal``), so the driver
raises one clean error. ``from_arrays`` builds a DataFrame from NumPy arrays.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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


def arrow_batch_rdd(df):
    """A Python RDD of ``df``'s Arrow record batches, straight from Spark's JVM Arrow writer:
    no SQL Python worker and no row hand-over, so a fresh application starts one Python
    worker pool instead of two (about 1.5 s of its first fit). None where Spark exposes no
    such RDD (Spark Connect)."""
    from pyspark import RDD
    from pyspark.serializers import NoOpSerializer

    from sparkdl.spark.compat import arrow_schema

    jdf = getattr(df, "_jdf", None)
    if jdf is None:
        return None
    schema = arrow_schema(df.schema, df.sparkSession.conf)
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


def python_error(exc: BaseException) -> BaseException:
    """The ValueError/TypeError a Python task raised, recovered from Spark's wrapper."""
    text = str(exc)
    for kind in (ValueError, TypeError):
        marker = f"{kind.__name__}: "
        at = text.rfind(marker)
        if at >= 0:
            line = text[at + len(marker):].splitlines()[0].strip()
            return kind(line)
    return exc


def run_prep_job(fn, who):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - Spark wraps task errors in several classes
        mapped = python_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def label_who(who, label_plan) -> str:
    """The prefix of errors about labels: the operation and the label column(s)."""
    names = label_plan.names
    return f"{who} (label column{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))})"


def target_converter(model, label_plan, who):
    loss, out_shape = model.loss, tuple(model.output_shape)
    where = label_who(who, label_plan)

    def convert(y2d):
        # One number per row for a wider output: class ids (the cross-entropies one-hot them)
        # or, for another loss, a shape error that names (n,).
        y = y2d[:, 0] if y2d.ndim == 2 and y2d.shape[1] == 1 and out_shape != (1,) else y2d
        try:
            return loss.validate_targets(y, out_shape)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    return convert


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

    from sparkdl.spark import compat

    x = np.asarray(x)
    kind = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32
    x = np.ascontiguousarray(x, dtype=kind)
    width = int(np.prod(x.shape[1:]))
    columns = {features_col: compat.list_array(x.reshape(-1), len(x), width)}
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"from_arrays: expected len(y) == len(x), received {len(y)} and {len(x)}")
        if y.ndim == 1:
            columns[label_col] = pa.array(y.astype(np.float64))
        else:
            k = int(np.prod(y.shape[1:]))
            columns[label_col] = compat.list_array(y.reshape(-1).astype(np.float64), len(y), k)
    if num_partitions:
        columns[_ROW] = pa.array(np.arange(len(x), dtype=np.int64))
    table = pa.table(columns)
    if not compat.has_arrow_tables(spark):
        # pyspark 3.5: the same partitions through its Arrow stream to the JVM.
        if table.nbytes <= MAX_TASK_BYTES:
            batches = compat.local_batches(table, spark.sparkContext.defaultParallelism)
        else:
            batches = table.to_batches(max_chunksize=max(1, MAX_TASK_BYTES * table.num_rows // table.nbytes))
        df = compat.dataframe_from_batches(spark, batches, table.schema)
    elif table.nbytes <= MAX_TASK_BYTES:
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
