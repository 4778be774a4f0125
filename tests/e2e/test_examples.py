"""The examples end to end through spark-submit on data written here (each run well under a
minute on two cores): the pyspark.ml pipeline, the click-through model and the CIFAR-10 app."""
import importlib.util
import json
import re

import numpy as np
import pytest

from sparkdl.data import cifar10
from tests.helpers import ROOT, spark_submit

pq = pytest.importorskip("pyarrow.parquet")


# pyspark's own noise when it stops an idle Python worker. The JVM stops one by closing its
# socket: when no worker has been created or released for a minute (PythonWorkerFactory's
# MonitorThread, IDLE_WORKER_TIMEOUT_NS; a one-job fit on a loaded machine lasts that long), and
# at SparkContext.stop before it signals the daemon. The worker reads EOF, writes the error
# report for the JVM and exits; daemon.py's final flush of that report then fails. With
# spark.python.unix.domain.socket.enabled (sparkdl's default: it saves ~40 ms a task) a write
# to the closed socket fails at once (EPIPE); over TCP it lands and nothing is printed. Plain
# pyspark shows it, without sparkdl: on local[2] with worker reuse, a job of two tasks, then a
# one-task job holding its worker 80 s prints this traceback with Unix sockets, not with TCP.
# The worker was being stopped anyway: nothing is lost.
_DAEMON_BROKEN_PIPE = re.compile(
    r"Traceback \(most recent call last\):\n"
    r"(?:  File \"[^\n]*pyspark/daemon\.py\", line \d+, in \w+\n(?:    [^\n]*\n)?)+"
    r"BrokenPipeError: \[Errno 32\] Broken pipe\n")


def stderr_lines(stderr: str) -> list[str]:
    """The lines of a spark-submit's stderr, less pyspark daemon's broken-pipe tracebacks."""
    return _DAEMON_BROKEN_PIPE.sub("", stderr).splitlines()


def load_example(name):
    """An example script as a module (its helpers import nothing heavy at module level)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _float(pattern, text):
    found = re.search(pattern, text)
    assert found, f"no match for {pattern!r} in:\n{text[-3000:]}"
    return found


def check_predictions(path, printed):
    """The Parquet folder holds one row per test example: label, prediction and a probability
    array; the accuracy recomputed from it matches the printed one."""
    table = pq.read_table(str(path))
    assert table.column_names == ["label", "prediction", "probability"]
    assert table.num_rows == int(printed.group("test"))
    label = np.asarray(table.column("label").to_pylist())
    prediction = np.asarray(table.column("prediction").to_pylist())
    probability = np.asarray(table.column("probability").to_pylist())
    assert probability.shape == (table.num_rows, 10)
    np.testing.assert_allclose(probability.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(prediction, probability.argmax(axis=1))
    assert set(label) <= set(range(10))
    assert np.mean(prediction == label) == pytest.approx(float(printed.group("accuracy")), abs=5e-5)


def test_pipeline_app_cleans_csv_trains_and_writes_parquet(tmp_path):
    """Digits CSV with 7 dirty rows -> SQL cleaning drops exactly those (one reason each) ->
    VectorAssembler -> StandardScaler -> NNClassifier -> accuracy and F1 on the held-out rows."""
    app = load_example("pipeline_app")
    written = app.write_digits_csv(tmp_path / "digits.csv")
    out = tmp_path / "predictions"
    run = spark_submit(["--master", "local[2]", "examples/pipeline_app.py", "--input", written["path"],
                        "--num-classes", "10", "--feature-min", "0", "--feature-max", "16",
                        "--epochs", "5", "--workers", "2", "--output", str(out)], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(stderr_lines(run.stderr)) <= 5, run.stderr   # Spark's start-up logs stay off
    assert ("cleaning: 1804 rows read, 1797 kept, 7 dropped (null: 2, non-finite: 1, "
            "feature out of range: 1, label not a class index: 3)") in run.stdout, run.stdout
    printed = _float(r"test accuracy: (?P<accuracy>[0-9.]+)  f1: (?P<f1>[0-9.]+)  \((?P<train>\d+) train rows, "
                     r"(?P<test>\d+) test rows, 64 features, 10 classes", run.stdout)
    assert int(printed.group("train")) + int(printed.group("test")) == 1797
    assert float(printed.group("accuracy")) >= 0.90
    assert float(printed.group("f1")) >= 0.90
    check_predictions(out, printed)


def test_pipeline_app_reads_parquet_with_default_feature_columns(spark, tmp_path, capsys):
    """A Parquet folder, another label column name, and a string column that the default
    feature choice (numeric columns but the label) leaves out; run in this process on the
    tests' session (the spark-submit path is covered above)."""
    import pyarrow as pa
    from sklearn.datasets import load_digits

    digits = load_digits()
    columns = {name: pa.array(digits.data[:, j].astype(np.int64)) for j, name in enumerate(digits.feature_names)}
    columns["note"] = pa.array(["scan"] * len(digits.target))
    columns["digit"] = pa.array(digits.target.astype(np.int32))
    folder = tmp_path / "digits_parquet"
    folder.mkdir()
    pq.write_table(pa.table(columns), str(folder / "part-0.parquet"))
    out = tmp_path / "predictions"
    app = load_example("pipeline_app")
    result = app.run(spark, app.parse_args(["--input", str(folder), "--label-col", "digit", "--epochs", "3",
                                            "--workers", "2", "--output", str(out)]))
    printed = capsys.readouterr().out
    assert "cleaning: 1797 rows read, 1797 kept, 0 dropped" in printed, printed
    found = _float(r"test accuracy: (?P<accuracy>[0-9.]+)  f1: [0-9.]+  \(\d+ train rows, (?P<test>\d+) "
                   r"test rows, 64 features, 10 classes", printed)
    assert float(found.group("accuracy")) == pytest.approx(result["accuracy"], abs=5e-5)
    assert result["accuracy"] >= 0.90
    table = pq.read_table(str(out))
    assert table.column_names == ["digit", "prediction", "probability"]
    assert table.num_rows == result["test_rows"] == int(found.group("test"))


def test_ctr_app_reads_libsvm_and_nears_the_ground_truth_auc(tmp_path):
    """Wide & Deep on Spark's libsvm reader output (sparse vectors, one active index per
    field, fed to the model as int64 ids). The data come from a logistic model over the same
    ids, so the generating model's own test AUC is the ceiling: 20,000 training rows and 3
    epochs get within 0.03 of it (0.871 against 0.884 when written), and no model should beat
    it by more than test-set noise."""
    app = load_example("ctr_app")
    meta = app.write_synthetic(tmp_path, train_rows=20000, test_rows=5000, buckets=1024, seed=0)
    first = (tmp_path / "train.libsvm").read_text().splitlines()[0].split()
    assert first[0] in ("0", "1") and len(first) == 1 + meta["num_fields"]
    indices = [int(item.split(":")[0]) for item in first[1:]]
    assert indices == sorted(set(indices)) and indices[0] >= 1 and indices[-1] <= meta["num_features"]
    assert json.loads((tmp_path / "meta.json").read_text())["true_test_auc"] == meta["true_test_auc"]

    run = spark_submit(["--master", "local[2]", "examples/ctr_app.py", "--data-dir", str(tmp_path),
                        "--epochs", "3", "--workers", "2"], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(stderr_lines(run.stderr)) <= 5, run.stderr   # Spark's start-up logs stay off
    printed = _float(r"test AUC: (?P<auc>[0-9.]+)  \(Spark's BinaryClassificationEvaluator: (?P<spark>[0-9.]+)\)",
                     run.stdout)
    truth = float(_float(r"ground-truth AUC of the generating model on the test rows: ([0-9.]+)",
                         run.stdout).group(1))
    auc, spark_auc = float(printed.group("auc")), float(printed.group("spark"))
    assert truth == pytest.approx(meta["true_test_auc"], abs=1e-4)
    assert abs(auc - spark_auc) <= 0.002          # binned (4096 bins) vs Spark's exact AUC
    assert truth - 0.03 <= auc <= truth + 0.01


def write_fake_cifar(folder, train_per_file=24, test_rows=30, seed=0):
    """Small files in the exact CIFAR-10 binary layout, with a learnable signal: the class
    sets the mean brightness of one colour channel."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 3, 32, 32)).astype(np.uint8)
        images[np.arange(n), labels % 3] += (labels * 12).astype(np.uint8)[:, None, None]
        return images, labels

    for name in cifar10.TRAIN_FILES:
        cifar10.write_batch(folder / name, *make(train_per_file))
    cifar10.write_batch(folder / cifar10.TEST_FILE, *make(test_rows))


def test_cifar_app_reads_binary_files_and_trains_quietly(tmp_path):
    """120 training images, 15 epochs of rounds of tau=2 on two workers: the brightness signal
    is learnt. Over data seeds 0-1 and model seeds 0-1 the test accuracy on 100 images was
    0.86-1.00 (chance: 0.10; after the single epoch this test once ran, 0.07-0.30). Spark's
    start-up logs stay off: at most 5 lines come before the first epoch's line."""
    write_fake_cifar(tmp_path, test_rows=100)
    run = spark_submit(["--master", "local[2]", "examples/cifar_app.py", "--data-dir", str(tmp_path),
                        "--workers", "2", "--epochs", "15", "--tau", "2", "--batch-size", "20",
                        "--verbose", "2"])
    assert run.returncode == 0, run.stderr[-3000:]
    stdout = run.stdout.splitlines()
    first_epoch = next(i for i, line in enumerate(stdout) if line.startswith("Epoch 1/15"))
    before = stderr_lines(run.stderr) + stdout[:first_epoch]
    assert len(before) <= 5, before
    assert "very large size" not in run.stderr
    found = re.search(r"test accuracy: ([0-9.]+).*?(\d+) rounds of tau=2, 2 workers, 120 training images",
                      run.stdout)
    assert found, run.stdout[-2000:]
    # 60 rows per partition at batch 20: 3 steps an epoch, 2 rounds of tau=2.
    assert int(found.group(2)) == 30
    assert float(found.group(1)) >= 0.6, run.stdout[-2000:]


@pytest.mark.parametrize("name", ["mnist_app", "cifar_app", "ctr_app", "pipeline_app"])
def test_every_example_flag_has_help(name):
    parser = load_example(name).build_parser()
    assert [a.dest for a in parser._actions if not a.help] == []


def test_cifar_app_without_data_or_network_says_what_to_do_in_one_line(tmp_path, monkeypatch):
    app = load_example("cifar_app")
    for folder in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit) as ended:
            app.main(["--data-dir", str(folder)])
        message = str(ended.value.code)
        assert "\n" not in message and message.startswith("cifar_app.py: no CIFAR-10 binary files")
        assert "--download" in message
    # Port 9 (discard) on loopback refuses the connection: what --download meets without a network.
    monkeypatch.setattr(cifar10, "URL", "http://127.0.0.1:9/cifar-10-binary.tar.gz")
    with pytest.raises(SystemExit) as ended:
        app.main(["--data-dir", str(tmp_path / "new"), "--download"])
    message = str(ended.value.code)
    assert "\n" not in message, message
    assert message.startswith("cifar_app.py: could not download CIFAR-10 from http://127.0.0.1:9/"), message
    assert "unpack it into" in message
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == []      # no partial download left
