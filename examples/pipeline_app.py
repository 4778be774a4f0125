"""A pyspark.ml Pipeline around a sparkdl network: CSV or Parquet in, Parquet predictions out.

Reads a table (--input, CSV with a header or Parquet), cleans it with Spark SQL (values cast
to double, rows dropped that have a null, NaN or infinite value in a used column, a feature
outside [--feature-min, --feature-max], or a label that is not a class index in
[0, --num-classes)), splits off a test set, and fits

    VectorAssembler -> StandardScaler -> NNClassifier (an MLP trained by SparkModel)

as one Pipeline. The test accuracy and F1 come from Spark's MulticlassClassificationEvaluator;
the test predictions (label, prediction, class probabilities as an array) go to --output as
Parquet.

    spark-submit --properties-file spark-defaults.conf examples/pipeline_app.py \\
        --write-digits-csv /tmp/digits.csv --num-classes 10 --feature-min 0 --feature-max 16 \\
        --output /tmp/digit_predictions

--write-digits-csv PATH writes scikit-learn's 1,797 8x8 digits as CSV (64 pixel columns and
``label``) plus a few dirty rows for the cleaning step, and reads it when --input is not given.
"""
import argparse
import csv
import logging
import os
import time

DIRTY_ROWS = 7


def write_digits_csv(path, seed=0) -> dict:
    """scikit-learn's digits as CSV with a header (``pixel_0_0`` .. ``pixel_7_7``, ``label``),
    rows shuffled, plus ``DIRTY_ROWS`` rows the cleaning must drop: a missing pixel, a missing
    label, a NaN pixel, a pixel of 99 (outside 0..16), labels -1, 10 and 3.5."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    pixels, labels = digits.data[order].astype(int), digits.target[order]
    names = list(digits.feature_names) + ["label"]
    rows = [[str(v) for v in p] + [str(int(y))] for p, y in zip(pixels, labels)]
    template = rows[0]

    def dirty(column, value):
        row = list(template)
        row[column] = value
        return row

    bad = [dirty(5, ""), dirty(64, ""), dirty(20, "NaN"), dirty(33, "99"),
           dirty(64, "-1"), dirty(64, "10"), dirty(64, "3.5")]
    assert len(bad) == DIRTY_ROWS
    for k, row in enumerate(bad):          # spread them through the file
        rows.insert(100 + 250 * k, row)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(rows)
    return {"path": str(path), "clean_rows": len(labels), "dirty_rows": DIRTY_ROWS,
            "features": len(digits.feature_names), "classes": 10}


def _format_of(path, fmt):
    if fmt != "auto":
        return fmt
    lower = str(path).lower()
    for ext, name in ((".csv", "csv"), (".csv.gz", "csv"), (".parquet", "parquet"), (".pq", "parquet")):
        if lower.endswith(ext):
            return name
    if os.path.isdir(path):
        files = [f for f in os.listdir(path) if not f.startswith((".", "_"))]
        for ext, name in ((".parquet", "parquet"), (".csv", "csv")):
            if files and all(ext in f for f in files):
                return name
    raise SystemExit(f"pipeline_app: cannot tell the format of {path!r} from its name; pass --format csv "
                     f"or --format parquet")


def _q(name):
    return "`" + name.replace("`", "``") + "`"


def read_table(spark, path, fmt):
    if _format_of(path, fmt) == "csv":
        # Typed by inference; cleaning casts every used column to double anyway.
        return spark.read.option("header", True).option("inferSchema", True).csv(path)
    return spark.read.parquet(path)


def clean(spark, raw, label, features, num_classes, feature_min, feature_max):
    """Spark SQL over temp views: cast the used columns to double, give every row the first
    check it fails (a null, a NaN or infinite value, a feature out of range, a label that is
    not a class index) and keep the rows that fail none. Returns the clean DataFrame and the
    number of rows read and dropped per reason."""
    raw.createOrReplaceTempView("raw_rows")
    used = features + [label]
    casts = ",\n  ".join(f"TRY_CAST({_q(c)} AS DOUBLE) AS {_q(c)}" for c in used)
    spark.sql(f"SELECT\n  {casts}\nFROM raw_rows").createOrReplaceTempView("typed_rows")
    checks = {
        "null": " AND ".join(f"{_q(c)} IS NOT NULL" for c in used),
        "non-finite": " AND ".join(f"NOT isnan({_q(c)}) AND abs({_q(c)}) != CAST('Infinity' AS DOUBLE)"
                                   for c in used),
    }
    if feature_min is not None or feature_max is not None:
        low = repr(float(feature_min)) if feature_min is not None else "CAST('-Infinity' AS DOUBLE)"
        high = repr(float(feature_max)) if feature_max is not None else "CAST('Infinity' AS DOUBLE)"
        checks["feature out of range"] = " AND ".join(f"{_q(c)} BETWEEN {low} AND {high}" for c in features)
    checks["label not a class index"] = (f"{_q(label)} = floor({_q(label)}) AND {_q(label)} >= 0" +
                                         (f" AND {_q(label)} < {int(num_classes)}" if num_classes else ""))
    # Checks run in order, so a later one never sees the nulls an earlier one caught.
    reason = "\n    ".join(f"WHEN NOT ({cond}) THEN '{name}'" for name, cond in checks.items())
    spark.sql(f"SELECT *, CASE\n    {reason}\n    ELSE NULL END AS _dropped_for\nFROM typed_rows"
              ).createOrReplaceTempView("checked_rows")
    counts = {row["_dropped_for"]: row["rows"] for row in spark.sql(
        "SELECT _dropped_for, COUNT(*) AS `rows` FROM checked_rows GROUP BY _dropped_for").collect()}
    columns = ", ".join(_q(c) for c in used)
    cleaned = spark.sql(f"SELECT {columns} FROM checked_rows WHERE _dropped_for IS NULL")
    report = {"read": sum(counts.values()), "kept": counts.get(None, 0)}
    report["dropped"] = {name: counts.get(name, 0) for name in checks}
    return cleaned, report


def build_model(num_features, num_classes, hidden, seed):
    import sparkdl
    from sparkdl.engine import optimizers, zoo
    sparkdl.set_random_seed(seed)
    model = zoo.mlp(input_dim=num_features, hidden=hidden, num_classes=num_classes)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a CSV file (with a header) or a Parquet file or folder")
    parser.add_argument("--format", default="auto", choices=("auto", "csv", "parquet"),
                        help="default: from the extension of --input")
    parser.add_argument("--output", help="where to write the test predictions (Parquet)")
    parser.add_argument("--write-digits-csv", metavar="PATH",
                        help="write scikit-learn's digits (plus dirty rows) as CSV to PATH first")
    parser.add_argument("--label-col", default="label", help="the label column (default 'label')")
    parser.add_argument("--feature-cols", help="comma-separated (default: every numeric column but the label)")
    parser.add_argument("--num-classes", type=int,
                        help="labels must be 0..N-1 (default: 1 + the largest whole label)")
    parser.add_argument("--feature-min", type=float, help="drop rows with a feature below this")
    parser.add_argument("--feature-max", type=float, help="drop rows with a feature above this")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="rows held out for the test (default 0.2)")
    parser.add_argument("--hidden", default="64", help="hidden layer sizes, comma-separated")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="partitions that train (default 2)")
    parser.add_argument("--lr", type=float, default=0.0, help="SGD learning rate (0: the model's 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batches")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.input and not args.write_digits_csv:
        parser.error("expected --input PATH (or --write-digits-csv PATH)")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.write_digits_csv:
        written = write_digits_csv(args.write_digits_csv, seed=args.seed)
        print(f"wrote {written['clean_rows']} digits and {written['dirty_rows']} dirty rows to {written['path']}")
        args.input = args.input or args.write_digits_csv

    from sparkdl.spark import get_session
    spark = get_session(app_name="sparkdl-pipeline")
    spark.sparkContext.setLogLevel("WARN")
    try:
        return run(spark, args)
    finally:
        spark.stop()


def run(spark, args) -> dict:
    """The whole job on ``spark``: read, clean, fit, evaluate, write."""
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql.types import NumericType

    from sparkdl.ml import NNClassifier

    raw = read_table(spark, args.input, args.format)
    label = args.label_col
    if label not in raw.columns:
        raise SystemExit(f"pipeline_app: no label column {label!r} in {args.input} (columns: {raw.columns})")
    if args.feature_cols:
        features = [c.strip() for c in args.feature_cols.split(",") if c.strip()]
        missing = [c for c in features if c not in raw.columns]
        if missing:
            raise SystemExit(f"pipeline_app: no feature columns {missing} in {args.input}")
    else:
        features = [f.name for f in raw.schema.fields
                    if f.name != label and isinstance(f.dataType, NumericType)]
    if not features:
        raise SystemExit(f"pipeline_app: no numeric feature columns in {args.input}; pass --feature-cols")

    data, report = clean(spark, raw, label, features, args.num_classes, args.feature_min, args.feature_max)
    data = data.cache()
    dropped = report["dropped"]
    print(f"cleaning: {report['read']} rows read, {report['kept']} kept, {sum(dropped.values())} dropped "
          f"({', '.join(f'{name}: {n}' for name, n in dropped.items())})")
    num_classes = args.num_classes or int(data.agg({label: "max"}).first()[0]) + 1

    train, test = data.randomSplit([1 - args.test_fraction, args.test_fraction], seed=args.seed)
    train = train.cache()
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    classifier = NNClassifier(model=build_model(len(features), num_classes, hidden, args.seed),
                              featuresCol="scaled_features", labelCol=label, epochs=args.epochs,
                              batchSize=args.batch_size, numWorkers=args.workers, learningRate=args.lr,
                              seed=args.seed)
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=features, outputCol="assembled_features"),
        StandardScaler(inputCol="assembled_features", outputCol="scaled_features", withMean=True, withStd=True),
        classifier,
    ])
    start = time.perf_counter()
    fitted = pipeline.fit(train)
    elapsed = time.perf_counter() - start

    predictions = fitted.transform(test).cache()
    scores = {metric: MulticlassClassificationEvaluator(labelCol=label, predictionCol="prediction",
                                                        metricName=metric).evaluate(predictions)
              for metric in ("accuracy", "f1")}
    test_rows = predictions.count()
    print(f"test accuracy: {scores['accuracy']:.4f}  f1: {scores['f1']:.4f}  "
          f"({train.count()} train rows, {test_rows} test rows, {len(features)} features, "
          f"{num_classes} classes, fit {elapsed:.1f}s, {args.workers} workers)")
    if args.output:
        (predictions.select(label, "prediction", vector_to_array("probability").alias("probability"))
         .write.mode("overwrite").parquet(args.output))
        print(f"wrote {test_rows} predictions to {args.output}")
    return {"accuracy": scores["accuracy"], "f1": scores["f1"], "test_rows": test_rows}


if __name__ == "__main__":
    main()
