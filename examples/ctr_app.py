"""Click-through prediction with Wide & Deep on libsvm files, read by Spark's own libsvm source.

Each libsvm row is a click label and one ``index:1`` per categorical field: the field's hashed
id. Spark's reader gives a ``features`` SparseVector with one active index per field, and
sparkdl hands a model whose input is ``Input((num_fields,), dtype="int64")`` the active
indices of each row as its ids (no UDF), so the vectors feed the embeddings directly.
Training is synchronous model averaging on the executors; the test AUC is computed twice, by
``SparkModel.evaluate`` (the model's compiled ``auc`` metric, summed over partitions) and by
Spark's ``BinaryClassificationEvaluator`` on the predictions.

    spark-submit --properties-file spark-defaults.conf examples/ctr_app.py \\
        --data-dir /tmp/clicks --write-synthetic [--workers 2 --epochs 3]

--write-synthetic fills --data-dir with train.libsvm and test.libsvm from
``sparkdl.data.synthetic.click_data`` (known logistic ground truth over the ids; each field
hashed into its own block of ``--buckets`` ids, so a row's indices are distinct and ascending,
as libsvm requires, and each field keeps its position in the ids) and meta.json with the
number of features and fields and the ground-truth test AUC, which the app then prints next
to its own.
"""
import argparse
import json
import logging
import os
import time


def exact_auc(labels, scores) -> float:
    """ROC AUC by ranks (Mann-Whitney, ties counted one half)."""
    import numpy as np
    labels, scores = np.asarray(labels) > 0.5, np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0           # 1-based, ties averaged
    ranks = np.empty(len(scores))
    ranks[order] = mean_rank[inverse]
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def write_synthetic(folder, train_rows=20000, test_rows=5000, buckets=1024, seed=0) -> dict:
    """train.libsvm, test.libsvm and meta.json in ``folder`` from ``click_data`` (no dense
    features, so the ids alone determine the true click probability)."""
    import numpy as np

    from sparkdl.data.synthetic import click_data
    data = click_data(train_rows + test_rows, seed=seed, num_dense=0, num_ids=buckets)
    num_fields = data.ids.shape[1]
    # Field f's ids live in [f * buckets, (f + 1) * buckets): distinct within a row, ascending
    # in field order. The truth (one weight per (field, id) pair) is unchanged.
    ids = data.ids + np.arange(num_fields, dtype=np.int64) * buckets
    os.makedirs(folder, exist_ok=True)
    for name, rows in (("train", slice(0, train_rows)), ("test", slice(train_rows, None))):
        with open(os.path.join(folder, f"{name}.libsvm"), "w") as f:
            f.writelines(f"{int(y)} " + " ".join(f"{i + 1}:1" for i in row) + "\n"  # libsvm is 1-based
                         for row, y in zip(ids[rows].tolist(), data.label[rows]))
    test = slice(train_rows, None)
    meta = {"num_features": num_fields * buckets, "num_fields": num_fields, "train_rows": train_rows,
            "test_rows": test_rows, "click_rate": float(data.label.mean()),
            "true_test_auc": exact_auc(data.label[test], data.probability[test]), "seed": seed}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def build_model(kind, num_features, num_fields, embedding_dim, hidden, lr, seed):
    import sparkdl
    from sparkdl.engine import optimizers, zoo
    sparkdl.set_random_seed(seed)
    builder = {"wide_and_deep": zoo.wide_and_deep, "dnn": zoo.dnn_with_embeddings}[kind]
    model = builder(num_features, num_fields, embedding_dim=embedding_dim, hidden=hidden)
    model.compile(optimizer=optimizers.Adam(learning_rate=lr), loss="binary_crossentropy",
                  metrics=["auc", "logloss"])
    return model


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder with train.libsvm, test.libsvm (and meta.json)")
    parser.add_argument("--train", help="training libsvm file (default: DATA_DIR/train.libsvm)")
    parser.add_argument("--test", help="test libsvm file (default: DATA_DIR/test.libsvm)")
    parser.add_argument("--write-synthetic", action="store_true",
                        help="first write synthetic click data into --data-dir")
    parser.add_argument("--train-rows", type=int, default=20000, help="--write-synthetic: training rows")
    parser.add_argument("--test-rows", type=int, default=5000, help="--write-synthetic: test rows")
    parser.add_argument("--buckets", type=int, default=1024, help="--write-synthetic: hashed ids per field")
    parser.add_argument("--num-features", type=int, help="vector size (default: from meta.json)")
    parser.add_argument("--num-fields", type=int,
                        help="ids per row (default: meta.json, else the first training row's count)")
    parser.add_argument("--model", default="wide_and_deep", choices=("wide_and_deep", "dnn"),
                        help="Wide & Deep (default) or the deep tower alone")
    parser.add_argument("--embedding-dim", type=int, default=8, help="embedding size per field (default 8)")
    parser.add_argument("--hidden", default="64,32", help="deep tower sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="partitions that train (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set (default 3)")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per step (default 256)")
    parser.add_argument("--mode", default="sync", help="sync, async, hogwild, ssp, adag or easgd")
    parser.add_argument("--tau", default="epoch", help="'epoch', 'batch' or local steps per round")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the batches")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help="0 silent (default), 1 progress bar, 2 a line per epoch")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    meta = {}
    if args.write_synthetic:
        if not args.data_dir:
            parser.error("--write-synthetic needs --data-dir")
        meta = write_synthetic(args.data_dir, args.train_rows, args.test_rows, args.buckets, args.seed)
        print(f"wrote {meta['train_rows']} training and {meta['test_rows']} test rows to {args.data_dir}")
    elif args.data_dir and os.path.exists(os.path.join(args.data_dir, "meta.json")):
        with open(os.path.join(args.data_dir, "meta.json")) as f:
            meta = json.load(f)
    train_path = args.train or (args.data_dir and os.path.join(args.data_dir, "train.libsvm"))
    test_path = args.test or (args.data_dir and os.path.join(args.data_dir, "test.libsvm"))
    if not train_path or not test_path:
        parser.error("expected --data-dir, or --train and --test")
    num_features = args.num_features or meta.get("num_features")
    if not num_features:
        parser.error("expected --num-features (the vector size) when there is no meta.json")

    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from sparkdl.spark import SparkModel, get_session

    spark = get_session(app_name="sparkdl-ctr")
    spark.sparkContext.setLogLevel("WARN")

    def read(path):
        # numFeatures given: no extra pass over the file to find the largest index.
        return spark.read.format("libsvm").option("numFeatures", num_features).load(path)

    train, test = read(train_path).cache(), read(test_path).cache()
    num_fields = args.num_fields or meta.get("num_fields") or len(train.first().features.indices)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    model = build_model(args.model, num_features, num_fields, args.embedding_dim, hidden, args.lr, args.seed)
    frequency = int(args.tau) if args.tau.isdigit() else args.tau
    spark_model = SparkModel(model, mode=args.mode, frequency=frequency, num_workers=args.workers,
                             seed=args.seed)
    start = time.perf_counter()
    history = spark_model.fit(train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)
    elapsed = time.perf_counter() - start

    result = spark_model.evaluate(test)
    predictions = spark_model.predict(test)
    # The probability vector [1 - p, p]: the evaluator scores by its second entry.
    spark_auc = BinaryClassificationEvaluator(rawPredictionCol="probability", labelCol="label",
                                              metricName="areaUnderROC").evaluate(predictions)
    print(f"test AUC: {result['auc']:.4f}  (Spark's BinaryClassificationEvaluator: {spark_auc:.4f})  "
          f"test logloss: {result['logloss']:.4f}  ({args.model}, {num_fields} fields, {num_features} ids, "
          f"fit {elapsed:.1f}s: {len(history.rounds)} rounds, {args.workers} workers)")
    if "true_test_auc" in meta:
        print(f"ground-truth AUC of the generating model on the test rows: {meta['true_test_auc']:.4f}")
    spark.stop()
    return {"auc": result["auc"], "spark_auc": spark_auc, "true_auc": meta.get("true_test_auc")}


if __name__ == "__main__":
    main()
