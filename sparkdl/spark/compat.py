"""The few places where pyspark 3.5's API differs from 4.x's, each behind one function: 4.x
takes its own call unchanged, 3.5 an equivalent path (setup.cfg claims ``pyspark>=3.5``;
``make test-compat`` runs the Spark tests on the oldest versions claimed)."""
from __future__ import annotations

import inspect
from functools import lru_cache


@lru_cache(maxsize=None)
def pyspark_major() -> int:
    import pyspark
    return int(pyspark.__version__.split(".")[0])


def arrow_schema(schema, conf):
    """``schema`` (a StructType) as the Arrow schema Spark's JVM Arrow writer uses under the
    session conf ``conf``. pyspark 3.5's ``to_arrow_schema`` takes only the schema (UTC
    timestamps, no large var types: what its writer does too)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    params = inspect.signature(to_arrow_schema).parameters
    if "prefers_large_types" not in params:
        return to_arrow_schema(schema)
    large = conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false").lower() == "true"
    return to_arrow_schema(schema, timezone=conf.get("spark.sql.session.timeZone"), prefers_large_types=large)


def has_arrow_tables(spark) -> bool:
    """Whether ``spark.createDataFrame`` takes a ``pyarrow.Table`` (pyspark >= 4.0, and every
    Spark Connect session sparkdl supports)."""
    return pyspark_major() >= 4 or getattr(spark, "_jsparkSession", None) is None


def dataframe_from_batches(spark, batches, schema):
    """pyspark 3.5: a DataFrame with one partition per Arrow record batch of ``batches`` (all
    of the Arrow schema ``schema``), through the Arrow stream pyspark's own
    ``createDataFrame(pandas.DataFrame)`` hands to the JVM, without the detour through pandas."""
    from pyspark.sql import DataFrame
    from pyspark.sql.pandas.serializers import ArrowStreamSerializer
    from pyspark.sql.pandas.types import from_arrow_schema

    struct = from_arrow_schema(schema)
    jvm = spark._jvm
    jrdd = spark._sc._serialize_to_jvm(
        batches, ArrowStreamSerializer(),
        lambda path: jvm.PythonSQLUtils.readArrowStreamFromFile(path),
        lambda: jvm.ArrowIteratorServer())
    df = DataFrame(jvm.PythonSQLUtils.toDataFrame(jrdd, struct.json(), spark._jsparkSession), spark)
    df._schema = struct
    return df


def local_batches(table, parallelism):
    """``table`` cut as Spark 4 cuts a local relation into tasks (``LocalTableScanExec``:
    ``min(rows, parallelism)`` slices, slice ``i`` rows ``i*n//k`` to ``(i+1)*n//k``), one
    record batch a slice."""
    n = table.num_rows
    k = max(1, min(n, parallelism))
    bounds = [i * n // k for i in range(k + 1)]
    return [one_batch(table.slice(a, b - a)) for a, b in zip(bounds, bounds[1:])]


def one_batch(table):
    """``table``'s rows as one record batch (an empty one for no rows)."""
    batches = table.combine_chunks().to_batches()
    if not batches:
        import pyarrow as pa
        return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in table.schema], schema=table.schema)
    return batches[0]


def list_array(values, rows: int, width: int):
    """The flat NumPy array ``values`` as an Arrow ``list<...>`` column of ``rows`` rows of
    ``width`` values each (pyarrow 12 cannot cast a fixed-size list to a list)."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.array(np.arange(rows + 1, dtype=np.int64) * width, type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values))
