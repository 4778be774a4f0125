"""DataFrames and RDDs to cached training blocks: one contiguous ``(xs, y)`` per partition.

Each partition is converted once, through Arrow batches, into arrays shaped like the model's
inputs (``sparkdl.spark.frames``), and the resulting RDD of blocks is cached; training rounds
read those blocks and never see a Row object. ``split_blocks`` holds out each partition's last
rows for ``validation_split``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sparkdl.spark.frames import (MAX_TASK_BYTES, Refusal, arrow_batch_rdd, batch_to_array, check_values,
                                  decode_block, encode_block, label_who, plan_columns, raise_refusal, refusing,
                                  run_prep_job, target_converter)

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext



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

    @property
    def site(self):
        """Where the fit over these blocks runs (``job.ClassicSite``)."""
        from sparkdl.spark.job import ClassicSite
        return ClassicSite(self.rdd.context)

    def split(self, validation_split: float) -> tuple[Blocks, Blocks]:
        """``split_blocks(self, validation_split)``."""
        return split_blocks(self, validation_split)

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


def block_converter(model, features, label, who):
    """The function turning one partition's Arrow record batches into its block ``([x], y)``."""
    (shape, dtype), = model.input_specs()
    width = int(np.prod(shape))
    to_targets = target_converter(model, label, who) if label is not None else None

    def convert(batches):
        xs, ys = [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = batch_to_array(batch, features, who)
            check_values(x, who, f"features column {features.names}")
            xs.append(x)
            if label is not None:
                ys.append(batch_to_array(batch, label, label_who(who, label)))
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
    convert = block_converter(model, features, label, who)
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
    rows = run_prep_job(lambda: rdd.map(lambda b: b if isinstance(b, Refusal) else len(b[0][0])).collect(),
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
    from sparkdl.spark.connect import is_connect, refusal
    if is_connect(sc):
        raise refusal("to_simple_rdd", "an RDD", "use from_arrays(spark, x, y) for a DataFrame of the arrays")
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
    rows = run_prep_job(lambda: blocks.map(lambda b: b if isinstance(b, Refusal) else len(b[1])).collect(), who)
    raise_refusal(rows, blocks.unpersist)
    if sum(rows) == 0:
        blocks.unpersist()
        raise ValueError(f"{who}: the RDD is empty; expected at least one (x, y) pair")
    if sum(rows) < parts:
        blocks.unpersist()
        raise ValueError(f"{who}: {parts} workers but only {sum(rows)} rows; expected at least one "
                         f"row per worker (lower num_workers)")
    return Blocks(blocks, rows)


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
