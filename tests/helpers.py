"""Helpers the test directories share: small data sets and references computed from them
(softmax, one-hot rows, the exact AUC), the models most tests train, a Probe layer that makes
batch order and random draws visible, Spark DataFrames of the digits, weight comparisons, the
wire protocol's raw pieces, and spark-submit for the end-to-end runs. (The shared layer case
and the layer references live in tests/engine/layer_case.py.)"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.distributed import protocol
from sparkdl.distributed.protocol import Op
from sparkdl.engine import zoo
from sparkdl.models import Input, Sequential

ROOT = Path(__file__).resolve().parents[1]


# ---- data ---------------------------------------------------------------------------------------
def regression_data(n=24, d=5, out=2, seed=0, linear=False):
    """``(x, y)`` in float32: ``x ~ N(0, 1)`` of shape (n, d); ``y`` of shape (n, out), noise
    independent of ``x``, or with ``linear`` the fixed learnable ``x @ W + 0.3``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if linear:
        w = np.resize(np.array([1.0, -2.0, 0.5]), (d, out))
        return x, (x @ w + 0.3).astype(np.float32)
    return x, rng.normal(size=(n, out)).astype(np.float32)


def classification_data(n=48, d=4, classes=3, seed=0):
    """``(x, class ids)``: ``x ~ N(0, 1)`` in float32, the ids thresholds on its first two
    features (learnable), at most ``classes - 1``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, np.minimum(y, classes - 1)


def one_hot(ids, classes):
    """float32 one-hot rows of the class ``ids``."""
    return np.eye(classes, dtype=np.float32)[np.asarray(ids)]


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def exact_auc(labels, scores) -> Fraction:
    """The Mann-Whitney AUC as an exact fraction: the share of (positive, negative) pairs ranked
    right, ties counting one half (from rank sums; independent of the engine's binned metric)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = (np.asarray(labels).reshape(-1) != 0)[np.argsort(scores, kind="mergesort")]
    _, first, counts = np.unique(np.sort(scores), return_index=True, return_counts=True)
    # A tie group at sorted positions i..j shares the rank (i + j) / 2 + 1: twice that is an int.
    twice_ranks = np.repeat(2 * first + counts + 1, counts)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return Fraction(int(twice_ranks[positive].sum()) - n_pos * (n_pos + 1), 2 * n_pos * n_neg)


# ---- models -------------------------------------------------------------------------------------
def mlp(*out_layers, input_dim=5, hidden=(8, 4), activations=("tanh", "relu"), dropout=0.0, std=None,
        seed=0, sgd=None, optimizer=None, loss="mse", metrics=()):
    """A small MLP: ``Input(input_dim)``, then ``Dense(hidden[i], activations[i])`` named
    ``hidden_a``, ``hidden_b``... (a ``Dropout`` named ``drop`` after the first when
    ``dropout``), then ``out_layers`` (default ``Dense(2, name="out")``). With ``std`` every
    weight is redrawn from N(0, std) with ``seed``. Compiled with ``loss`` and ``metrics`` when
    given ``optimizer``, or ``sgd`` (plain SGD's learning rate)."""
    stack = [Input((input_dim,))]
    for i, (units, activation) in enumerate(zip(hidden, activations)):
        stack.append(layers.Dense(units, activation=activation, name=f"hidden_{'abcdef'[i]}"))
        if i == 0 and dropout:
            stack.append(layers.Dropout(dropout, name="drop"))
    stack += list(out_layers) or [layers.Dense(2, name="out")]
    model = Sequential(stack, name="mlp")
    if std is not None:
        rng = np.random.default_rng(seed)
        model.set_weights([rng.normal(0.0, std, size=w.shape) for w in model.get_weights()])
    if sgd is not None:
        optimizer = optimizers.SGD(learning_rate=sgd)
    if optimizer is not None:
        model.compile(optimizer, loss, metrics=list(metrics))
    return model


class Probe(layers.Layer):
    """An identity layer that is stochastic (so training reseeds it for every batch) and records,
    per training batch, the rows it sees (their first feature: give rows their index there) and
    one draw of its generator: a model's batch order and random stream made visible."""

    stochastic = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training=False):
        if training:
            self.seen.append((x[:, 0].astype(int).tolist(), float(self.rng.random())))
        return x

    def backward(self, dLdy):
        return dLdy


def probed_model(width=2):
    """``Input(width) -> Probe -> Dense(1)``, compiled with plain SGD and mse; returns
    ``(model, probe)``."""
    probe = Probe()
    model = Sequential([Input((width,)), probe, layers.Dense(1)])
    model.compile(optimizers.SGD(0.01), "mse")
    return model, probe


def indexed_rows(n, width=2, seed=0):
    """``(x, y)``: ``x[:, 0]`` is the row's index (what a Probe records), the rest noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x, rng.normal(size=(n, 1)).astype(np.float32)


def compiled_mlp(input_dim=784, hidden=(256, 128), num_classes=10, seed=0, lr=0.05, momentum=0.9,
                 loss="sparse_categorical_crossentropy"):
    """``zoo.mlp`` built after ``set_random_seed(seed)``, compiled with SGD(lr, momentum) and
    accuracy as its metric: by default the MNIST MLP (784-256-128-10)."""
    sparkdl.set_random_seed(seed)
    model = zoo.mlp(input_dim=input_dim, hidden=hidden, num_classes=num_classes)
    model.compile(optimizers.SGD(lr, momentum=momentum), loss, metrics=["accuracy"])
    return model


def digits_mlp(seed=0, lr=0.1, momentum=0.9, hidden=(32,), loss="categorical_crossentropy"):
    """``compiled_mlp`` for the 64 pixels and 10 classes of scikit-learn's digits."""
    return compiled_mlp(64, hidden, 10, seed=seed, lr=lr, momentum=momentum, loss=loss)


# ---- Spark data ---------------------------------------------------------------------------------
def sparse_row(r):
    """An ml SparseVector of the non-zero entries of ``r``."""
    from pyspark.ml.linalg import Vectors
    nz = np.flatnonzero(r)
    return Vectors.sparse(len(r), nz.tolist(), r[nz].astype(float).tolist())


def vector_frame(spark, x, labels, label_as="vector", features_as="dense", partitions=1):
    """A DataFrame with an ml Vector features column (dense or sparse rows) and a label column
    given as ml Vectors (``"vector"`` or ``"sparse"``), arrays of doubles (``"array"``) or one
    double per row (``"scalar"``). One partition keeps the rows in order, as the engine sees them."""
    from pyspark.ml.linalg import Vectors

    def feat(r):
        return sparse_row(r) if features_as == "sparse" else Vectors.dense(r.astype(float))

    def lab(v):
        if label_as == "vector":
            return Vectors.dense(np.asarray(v, dtype=float))
        if label_as == "sparse":
            return sparse_row(np.asarray(v, dtype=float))
        if label_as == "array":
            return [float(t) for t in v]
        return float(v)
    df = spark.createDataFrame([(feat(r), lab(v)) for r, v in zip(x, labels)], ["features", "label"])
    return df.coalesce(1) if partitions == 1 else df.repartition(partitions)


#: the pixel columns of the digits DataFrames of the pyspark.ml tests
PIXELS = [f"p{i}" for i in range(64)]


def assembled(df):
    """``df`` with its PIXELS assembled into an ml Vector column ``features``."""
    from pyspark.ml.feature import VectorAssembler
    return VectorAssembler(inputCols=PIXELS, outputCol="features").transform(df)


# ---- comparisons --------------------------------------------------------------------------------
def _arrays(a):
    return a.get_weights() if hasattr(a, "get_weights") else list(a)


def same_weights(a, b) -> bool:
    """Whether two models (or lists of arrays) hold bitwise equal weights."""
    wa, wb = _arrays(a), _arrays(b)
    return len(wa) == len(wb) and all(np.array_equal(u, v) for u, v in zip(wa, wb))


def assert_same_weights(a, b, atol=0.0) -> None:
    """Two models (or lists of arrays) hold the same weights: bitwise, with the same dtypes and
    shapes, or within ``atol``."""
    wa, wb = _arrays(a), _arrays(b)
    assert len(wa) == len(wb)
    for i, (u, v) in enumerate(zip(wa, wb)):
        assert u.shape == v.shape, (i, u.shape, v.shape)
        if atol:
            np.testing.assert_allclose(u, v, rtol=0, atol=atol, err_msg=f"weight {i}")
        else:
            assert u.dtype == v.dtype, (i, u.dtype, v.dtype)
            np.testing.assert_array_equal(u, v, err_msg=f"weight {i}")


def esc(text) -> str:
    """``text`` (any object, as ``str``) escaped for ``pytest.raises(match=...)``."""
    return re.escape(str(text))


# ---- the wire protocol --------------------------------------------------------------------------
def socket_pair(timeout=5.0):
    """Two connected sockets with a timeout (for frames without a server)."""
    a, b = socket.socketpair()
    a.settimeout(timeout)
    b.settimeout(timeout)
    return a, b


def raw_header(magic=protocol.MAGIC, version=protocol.VERSION, op=Op.PUSH, code=1, ndim=1,
               meta_len=2, data_len=8):
    """A frame header with any field set, valid or not."""
    return protocol.HEADER.pack(magic, version, op, code, ndim, meta_len, data_len)


# ---- end-to-end runs ----------------------------------------------------------------------------
def spark_submit(args, timeout=600, env=None):
    """``spark-submit`` (the one next to this Python) from the repository root with the
    project's properties file, driver and executors running this Python unless ``env`` (more
    environment variables) says otherwise; returns the CompletedProcess."""
    submit = Path(sys.executable).with_name("spark-submit")
    if not submit.exists():
        pytest.skip("spark-submit is not installed next to this Python")
    import pyspark
    if int(pyspark.__version__.split(".")[0]) < 4:
        # Spark 3.5's "Barrier task timer" thread is not a daemon: after a barrier job the
        # application's JVM never exits, and spark-submit hangs until the timeout.
        pytest.skip(f"spark-submit of a barrier job does not exit on pyspark {pyspark.__version__} (Spark 3.5's "
                    f"barrier task timer thread is not a daemon)")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(submit), "--properties-file", str(ROOT / "spark-defaults.conf")] + args,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def jobs_of_failing_call(spark, call, error, match):
    """Run ``call``, which must raise ``error`` matching ``match``; returns how many Spark jobs
    it started."""
    sc = spark.sparkContext
    group = f"failing-call-{uuid.uuid4().hex}"
    sc.setJobGroup(group, "a call that must fail before any job")
    try:
        with pytest.raises(error, match=match):
            call()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))
