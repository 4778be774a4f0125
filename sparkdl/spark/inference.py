"""Prediction and evaluation on the executors: a DataFrame gains prediction columns in Spark's
order (``predict_frame``), an RDD of feature rows is predicted in its order (``predict_rdd``),
and loss and metrics are computed per partition and combined on the driver
(``evaluate_frame``, ``evaluate_blocks``); the model travels once per job as a broadcast.
"""
from __future__ import annotations

import numpy as np

from sparkdl.spark.frames import (ColumnPlan, Refusal, batch_to_array, check_values, is_integer_input, label_who,
                                  plan_columns, raise_refusal, refusing, run_prep_job, target_converter)


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
    model_bc = executor.ship_model(df.sparkSession, model, who)

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

    from sparkdl.spark.compat import list_array

    pred, raw, prob = predicted
    columns = [(col, _dense_vectors(values)) for col, values in
               ((raw_prediction_col, raw), (probability_col, prob)) if col and values is not None]
    if pred.ndim == 1:
        return columns + [(prediction_col, pa.array(pred, pa.float64()))]
    return columns + [(prediction_col, list_array(pred.reshape(-1).astype(np.float64, copy=False), len(pred),
                                                  pred.shape[1]))]


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
    to_targets = target_converter(model, label, who)
    (shape, dtype), = model.input_specs()
    model_bc = executor.ship_model(df.sparkSession, model, who)

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
            y = to_targets(batch_to_array(batch, label, label_who(who, label)))
            loss_sum += _add_scores(m, mets, [x], y, batch_size)
            count += len(x)
        return loss_sum, count, [met.state for met in mets]

    selected = df.select(*(features.names + label.names))
    try:
        rows = run_prep_job(lambda: selected.mapInArrow(run, "refused boolean, state binary").collect(), who)
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
        parts = run_prep_job(lambda: rdd.mapPartitions(run).collect(), who)
    finally:
        model_bc.destroy()
    return _combined_scores(model, parts, who, "the validation data")


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
        parts = run_prep_job(lambda: rdd.mapPartitions(run).collect(), who)
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
