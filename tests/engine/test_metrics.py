"""Streaming metrics: values against hand counts and scikit-learn, merging, the registry."""
import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from sparkdl import metrics
from tests.helpers import exact_auc, one_hot, softmax


# ---- Accuracy --------------------------------------------------------------------------------
def test_accuracy_binary_one_output_unit_thresholds_at_half():
    y_true = np.array([1, 0, 1, 0, 1, 0])
    y_pred = np.array([[0.9], [0.2], [0.4], [0.7], [0.51], [0.5]], dtype=np.float32)
    # right, right, wrong (0.4 -> 0), wrong (0.7 -> 1), right, right (0.5 is not > 0.5)
    m = metrics.Accuracy()
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx(4 / 6)


def test_accuracy_sparse_class_ids():
    y_pred = np.array([[0.1, 0.7, 0.2],
                       [0.8, 0.1, 0.1],
                       [0.2, 0.3, 0.5],
                       [0.3, 0.4, 0.3]], dtype=np.float32)
    y_true = np.array([1, 0, 0, 2])  # right, right, wrong, wrong
    m = metrics.Accuracy()
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx(0.5)
    # The same ids as a column (n, 1) read the same way.
    m2 = metrics.Accuracy()
    m2.update(y_true.reshape(-1, 1), y_pred)
    assert m2.result() == pytest.approx(0.5)


def test_accuracy_one_hot_rows():
    y_pred = np.array([[0.1, 0.7, 0.2],
                       [0.8, 0.1, 0.1],
                       [0.2, 0.3, 0.5]], dtype=np.float32)
    y_true = one_hot(np.array([1, 2, 2]), 3)  # right, wrong, right
    m = metrics.Accuracy()
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx(2 / 3)


def test_accuracy_accumulates_over_batches():
    m = metrics.Accuracy()
    m.update(np.array([1, 1]), np.array([[0.9], [0.1]]))       # 1 of 2
    m.update(np.array([0, 0, 0]), np.array([[0.1], [0.2], [0.3]]))  # 3 of 3
    assert m.result() == pytest.approx(4 / 5)
    m.reset()
    assert np.isnan(m.result())


# ---- TopKAccuracy ----------------------------------------------------------------------------
def test_top_k_with_k1_equals_accuracy():
    rng = np.random.default_rng(1)
    y_pred = softmax(rng.normal(size=(50, 6)))
    y_true = rng.integers(0, 6, size=50)
    top1 = metrics.TopKAccuracy(k=1)
    acc = metrics.Accuracy()
    top1.update(y_true, y_pred)
    acc.update(y_true, y_pred)
    assert top1.result() == acc.result()
    assert top1.result() == pytest.approx(np.mean(np.argmax(y_pred, axis=1) == y_true))


def test_top_k3_against_hand_count():
    y_pred = np.array([
        [0.50, 0.20, 0.15, 0.10, 0.05],  # true 3: rank 4 -> miss
        [0.05, 0.10, 0.15, 0.20, 0.50],  # true 2: rank 3 -> hit
        [0.30, 0.25, 0.20, 0.15, 0.10],  # true 0: rank 1 -> hit
        [0.10, 0.20, 0.30, 0.25, 0.15],  # true 0: rank 5 -> miss
        [0.22, 0.18, 0.20, 0.21, 0.19],  # true 1: rank 5 -> miss
        [0.22, 0.18, 0.20, 0.21, 0.19],  # true 2: rank 3 -> hit
    ], dtype=np.float32)
    y_true = np.array([3, 2, 0, 0, 1, 2])
    m = metrics.TopKAccuracy(k=3)
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx(3 / 6)
    # One-hot targets give the same answer.
    m1 = metrics.TopKAccuracy(k=3)
    m1.update(one_hot(y_true, 5), y_pred)
    assert m1.result() == pytest.approx(3 / 6)


def test_top_k_ties_at_the_boundary_count_as_in_top_k():
    # A class is in the top k when fewer than k classes score strictly higher.
    y_pred = np.array([[0.3, 0.3, 0.3, 0.1],
                       [0.4, 0.2, 0.2, 0.2],
                       [0.4, 0.2, 0.2, 0.2],
                       [0.4, 0.2, 0.2, 0.2]], dtype=np.float32)
    y_true = np.array([2, 3, 0, 1])
    k1 = metrics.TopKAccuracy(k=1)
    k1.update(y_true, y_pred)
    # row 0: tie for first -> hit; rows 1, 3: one class higher -> miss; row 2 -> hit
    assert k1.result() == pytest.approx(2 / 4)
    k2 = metrics.TopKAccuracy(k=2)
    k2.update(y_true, y_pred)
    assert k2.result() == pytest.approx(1.0)


def test_top_k_larger_than_classes_is_always_right_and_bad_k_rejected():
    m = metrics.TopKAccuracy(k=10)
    m.update(np.array([0, 1, 2]), np.eye(3, dtype=np.float32)[::-1])
    assert m.result() == 1.0
    with pytest.raises(ValueError, match="k >= 1"):
        metrics.TopKAccuracy(k=0)
    with pytest.raises(ValueError, match="multi-class"):
        metrics.TopKAccuracy(k=1).update(np.array([1, 0]), np.array([[0.2], [0.9]]))


# ---- MeanSquaredError and LogLoss ------------------------------------------------------------
def test_mean_squared_error_against_hand_and_sklearn():
    y_true = np.array([[1.0, 2.0], [3.0, -1.0]])
    y_pred = np.array([[1.5, 2.0], [2.0, 1.0]], dtype=np.float32)
    m = metrics.MeanSquaredError()
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx((0.25 + 0 + 1 + 4) / 4)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)).astype(np.float32)
    m = metrics.MeanSquaredError()
    m.update(a[:25], b[:25])
    m.update(a[25:], b[25:])
    assert m.result() == pytest.approx(mean_squared_error(a, b), rel=1e-6)


def test_logloss_binary_against_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=200)
    p = rng.uniform(0.02, 0.98, size=200)
    m = metrics.LogLoss()
    m.update(y, p.reshape(-1, 1))
    assert m.result() == pytest.approx(log_loss(y, p), rel=1e-9)


def test_logloss_multiclass_against_sklearn_ids_and_one_hot():
    rng = np.random.default_rng(4)
    p = softmax(rng.normal(size=(150, 4)))
    y = rng.integers(0, 4, size=150)
    expected = log_loss(y, p, labels=[0, 1, 2, 3])
    m = metrics.LogLoss()
    m.update(y, p)
    assert m.result() == pytest.approx(expected, rel=1e-9)
    m1 = metrics.LogLoss()
    m1.update(one_hot(y, 4), p)
    assert m1.result() == pytest.approx(expected, rel=1e-9)


# ---- AUC -------------------------------------------------------------------------------------
def test_auc_binary_continuous_scores_close_to_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=600)
    scores = np.clip(rng.normal(0.45 + 0.15 * y, 0.2), 0, 1)
    m = metrics.AUC()
    m.update(y[:300], scores[:300].reshape(-1, 1))
    m.update(y[300:], scores[300:].reshape(-1, 1))
    assert m.result() == pytest.approx(roc_auc_score(y, scores), abs=1e-3)


@pytest.mark.parametrize("num_bins", [4096, 10])
def test_auc_binary_exact_on_bin_centre_scores_with_ties(num_bins):
    rng = np.random.default_rng(6)
    n = 300
    y = rng.integers(0, 2, size=n)
    # Few distinct levels, so many positive/negative pairs tie.
    levels = rng.integers(0, min(num_bins, 7), size=n) + 2 * y
    levels = np.minimum(levels, num_bins - 1)
    scores = (levels + 0.5) / num_bins
    assert len(np.unique(scores)) < n // 10  # heavy ties
    m = metrics.AUC(num_bins=num_bins)
    m.update(y, scores)
    exact = exact_auc(y, scores)
    assert m.result() == float(exact)
    assert m.result() == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auc_binary_hand_example():
    # positives at 0.75, 0.25; negatives at 0.25, 0.05 (4 bins): pairs (.75,.25) (.75,.05)
    # (.25,.05) win and (.25,.25) ties -> 3.5 / 4
    m = metrics.AUC(num_bins=4)
    m.update(np.array([1, 1, 0, 0]), np.array([0.875, 0.375, 0.375, 0.125]))
    assert m.result() == 3.5 / 4


def test_auc_multiclass_ovr_macro_close_to_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, size=500)
    logits = rng.normal(size=(500, 4)) + 1.2 * one_hot(y, 4)
    p = softmax(logits)
    m = metrics.AUC()
    m.update(y, p)
    expected = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert m.result() == pytest.approx(expected, abs=1e-3)
    m1 = metrics.AUC()
    m1.update(one_hot(y, 4), p)
    assert m1.result() == pytest.approx(expected, abs=1e-3)


def test_auc_multiclass_skips_classes_without_both_kinds_of_examples():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, size=200)  # class 2 never occurs
    p = softmax(rng.normal(size=(200, 3)) + one_hot(y, 3))
    m = metrics.AUC()
    m.update(y, p)
    expected = np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 1)])
    assert m.result() == pytest.approx(expected, abs=1e-3)


def test_auc_single_class_is_nan_and_column_count_checked():
    m = metrics.AUC()
    m.update(np.ones(5), np.linspace(0, 1, 5))
    assert np.isnan(m.result())
    m = metrics.AUC()
    m.update(np.array([0, 1]), np.array([[0.5, 0.5], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="expected 2 output columns, received 3"):
        m.update(np.array([0]), np.array([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="num_bins >= 2"):
        metrics.AUC(num_bins=1)


def test_mean_absolute_error_against_hand_and_sklearn():
    y_true = np.array([[1.0, 2.0], [3.0, -1.0]])
    y_pred = np.array([[1.5, 2.0], [2.0, 1.0]], dtype=np.float32)
    m = metrics.get("mae")
    assert isinstance(m, metrics.MeanAbsoluteError) and isinstance(metrics.get("mean_absolute_error"),
                                                                    metrics.MeanAbsoluteError)
    m.update(y_true, y_pred)
    assert m.result() == pytest.approx((0.5 + 0 + 1 + 2) / 4)
    np.testing.assert_array_equal(m.state, [3.5, 4])        # (sum of |errors|, count)
    # Targets of shape (n,) for one output unit, as the losses take them.
    m = metrics.MeanAbsoluteError()
    m.update(np.array([0.0, 1.0, 4.0]), np.array([[0.5], [1.0], [1.0]], dtype=np.float32))
    assert m.result() == pytest.approx((0.5 + 0 + 3) / 3)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)).astype(np.float32)
    m = metrics.MeanAbsoluteError()
    m.update(a[:25], b[:25])
    m.update(a[25:], b[25:])
    assert m.result() == pytest.approx(mean_absolute_error(a, b), rel=1e-6)


def test_fresh_copies_kind_and_settings_with_an_empty_state():
    m = metrics.TopKAccuracy(k=2)
    m.update(np.array([0, 1]), np.array([[0.6, 0.4, 0.0], [0.5, 0.3, 0.2]]))
    f = m.fresh()
    assert type(f) is metrics.TopKAccuracy and f.k == 2 and f is not m
    np.testing.assert_array_equal(f.state, [0, 0])
    np.testing.assert_array_equal(m.state, [2, 2])


# ---- merge_state, __call__ -------------------------------------------------------------------
def _merge_cases():
    rng = np.random.default_rng(9)
    n = 90
    ids = rng.integers(0, 3, size=n)
    probs = softmax(rng.normal(size=(n, 3)) + one_hot(ids, 3)).astype(np.float32)
    yb = rng.integers(0, 2, size=n)
    pb = rng.uniform(0.01, 0.99, size=(n, 1)).astype(np.float32)
    reg = rng.normal(size=(n, 2)).astype(np.float32)
    reg_true = reg + rng.normal(size=(n, 2))
    return [
        ("accuracy-binary", metrics.Accuracy, yb, pb),
        ("accuracy-sparse", metrics.Accuracy, ids, probs),
        ("top_k", lambda: metrics.TopKAccuracy(k=2), ids, probs),
        ("mse", metrics.MeanSquaredError, reg_true, reg),
        ("mae", metrics.MeanAbsoluteError, reg_true, reg),
        ("logloss-binary", metrics.LogLoss, yb, pb),
        ("logloss-multi", metrics.LogLoss, ids, probs),
        ("auc-binary", metrics.AUC, yb, pb),
        ("auc-multi", lambda: metrics.AUC(num_bins=64), ids, probs),
    ]


@pytest.mark.parametrize("name,factory,y,p", _merge_cases(), ids=[c[0] for c in _merge_cases()])
def test_merge_state_equals_one_metric_on_all_data(name, factory, y, p):
    whole = factory()
    whole.update(y, p)
    a, b = factory(), factory()
    a.update(y[:37], p[:37])
    b.update(y[37:], p[37:])
    a.merge_state(b.state)
    assert a.result() == pytest.approx(whole.result(), rel=1e-12)
    np.testing.assert_allclose(a.state, whole.state)
    # Merging into a metric that has seen nothing (a fresh worker) works too.
    fresh = factory()
    fresh.merge_state(a.state)
    assert fresh.result() == pytest.approx(whole.result(), rel=1e-12)
    # And merging an empty worker changes nothing.
    a.merge_state(factory().state)
    assert a.result() == pytest.approx(whole.result(), rel=1e-12)


@pytest.mark.parametrize("name,factory,y,p", _merge_cases(), ids=[c[0] for c in _merge_cases()])
def test_calling_a_metric_leaves_running_state_untouched(name, factory, y, p):
    m = factory()
    m.update(y[:50], p[:50])
    state_before = np.array(m.state, copy=True)
    result_before = m.result()
    batch_value = m(y[50:], p[50:])
    separate = factory()
    separate.update(y[50:], p[50:])
    assert batch_value == pytest.approx(separate.result(), rel=1e-12)
    np.testing.assert_array_equal(m.state, state_before)
    assert m.result() == result_before


# ---- registry --------------------------------------------------------------------------------
def test_get_by_name_and_alias():
    assert isinstance(metrics.get("acc"), metrics.Accuracy)
    assert isinstance(metrics.get("Accuracy"), metrics.Accuracy)
    assert isinstance(metrics.get("mean_squared_error"), metrics.MeanSquaredError)
    assert isinstance(metrics.get("log_loss"), metrics.LogLoss)
    m = metrics.get({"name": "top_k_accuracy", "k": 2})
    assert isinstance(m, metrics.TopKAccuracy) and m.k == 2
    m = metrics.get(metrics.AUC(num_bins=8).get_config())
    assert isinstance(m, metrics.AUC) and m.num_bins == 8
    same = metrics.Accuracy()
    assert metrics.get(same) is same


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown metric 'precision'") as info:
        metrics.get("precision")
    for known in ("accuracy", "auc", "logloss", "mse", "top_k_accuracy"):
        assert known in str(info.value)
    with pytest.raises(TypeError, match="received int"):
        metrics.get(3)
