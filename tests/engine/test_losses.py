"""Losses (``sparkdl.engine.losses``): probability and logits forms against float64 central
differences, and against PyTorch's losses under autograd (float32; skipped without torch)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers, losses
from tests.engine.layer_case import assert_close, numeric_grad, to_torch
from tests.helpers import softmax

RTOL, ATOL = 1e-5, 1e-7


# ---- float64 central differences ------------------------------------------------------------
def _loss_case(name, rng):
    """(y_true, y_pred) in float64, predictions well inside the clipping range."""
    n, k = 5, 4
    if name == "mse":
        return rng.normal(size=(n, k)), rng.normal(size=(n, k))
    if name == "binary_crossentropy":
        y_true = np.concatenate([rng.integers(0, 2, size=(n, 2)), rng.uniform(size=(n, 1))], axis=1)
        return y_true, rng.uniform(0.05, 0.95, size=(n, 3))
    p = rng.uniform(0.1, 1.0, size=(n, k))
    p /= p.sum(axis=1, keepdims=True)
    if name == "categorical_crossentropy":
        y_true = np.eye(k)[rng.integers(0, k, size=n)]
        y_true[0] = [0.1, 0.2, 0.3, 0.4]  # a soft-label row as well
        return y_true, p
    return rng.integers(0, k, size=n), p


def _logits_case(name, rng):
    n, k = 5, 4
    z = rng.normal(scale=2.0, size=(n, k))
    if name == "binary_crossentropy":
        return np.concatenate([rng.integers(0, 2, size=(n, 2)), rng.uniform(size=(n, 2))], axis=1), z
    if name == "categorical_crossentropy":
        y_true = np.eye(k)[rng.integers(0, k, size=n)]
        y_true[1] = [0.25, 0.25, 0.5, 0.0]
        y_true[2] = [0.3, 0.0, 0.1, 0.2]  # unnormalised: the logits gradient must not assume sum 1
        return y_true, z
    return rng.integers(0, k, size=n), z


@pytest.mark.parametrize("name", ["mse", "binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_loss_probability_form_gradients(name):
    loss = losses.get(name)
    y_true, y_pred = _loss_case(name, np.random.default_rng(51))
    value, grad = loss.value_and_grad(y_true, y_pred.copy())
    assert grad.shape == y_pred.shape and grad.dtype == np.float64
    yp = y_pred.copy()
    num = numeric_grad(lambda: loss.value_and_grad(y_true, yp)[0], yp)
    np.testing.assert_allclose(grad, num, rtol=RTOL, atol=ATOL)
    # The mean of per_sample is the loss value, and so is calling the loss.
    np.testing.assert_allclose(np.mean(loss.per_sample(y_true, y_pred)), value, rtol=1e-12)
    np.testing.assert_allclose(loss(y_true, y_pred), value, rtol=1e-12)


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_loss_logits_form_gradients(name):
    loss = losses.get(name)
    y_true, z = _logits_case(name, np.random.default_rng(52))
    value, grad = loss.value_and_grad_logits(y_true, z.copy())
    assert grad.shape == z.shape and grad.dtype == np.float64
    zp = z.copy()
    num = numeric_grad(lambda: loss.value_and_grad_logits(y_true, zp)[0], zp)
    np.testing.assert_allclose(grad, num, rtol=RTOL, atol=ATOL)
    # The logits form is the probability form composed with the matching activation.
    probs = 1 / (1 + np.exp(-z)) if name == "binary_crossentropy" else softmax(z)
    np.testing.assert_allclose(value, loss(y_true, probs), rtol=1e-9)
    np.testing.assert_allclose(np.mean(loss.per_sample_logits(y_true, z)), value, rtol=1e-12)


# ---- against torch ----------------------------------------------------------------------------
def _torch_value_and_grad(fn, pred):
    pt = to_torch(pred, grad=True)
    value = fn(pt)
    value.backward()
    return float(value.detach()), pt.grad.numpy()


def _check_loss(ours, theirs):
    (v, g), (tv, tg) = ours, theirs
    assert_close(v, tv, msg="loss value")
    assert g.dtype == np.float32
    assert_close(g, tg, msg="loss gradient")


def test_mse_matches_torch(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=(2, 6, 4)).astype(np.float32)
    _check_loss(losses.get("mse").value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: F.mse_loss(pt, to_torch(y)), p))


def _bce_data(rng):
    y = rng.integers(0, 2, size=(6, 4)).astype(np.float32)
    y[0] = [0.3, 0.7, 0.5, 0.1]  # soft targets too
    return y


def test_binary_crossentropy_probabilities_match_torch_bce_loss(torch):
    rng = np.random.default_rng(4)
    y = _bce_data(rng)
    p = rng.uniform(0.02, 0.98, size=(6, 4)).astype(np.float32)
    _check_loss(losses.get("binary_crossentropy").value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: torch.nn.BCELoss()(pt, to_torch(y)), p))


def test_binary_crossentropy_logits_match_torch_bce_with_logits(torch):
    rng = np.random.default_rng(5)
    y = _bce_data(rng)
    z = (rng.normal(size=(6, 4)) * 4).astype(np.float32)
    z[1, 0], z[1, 1] = 30.0, -30.0  # saturated logits stay finite and exact
    _check_loss(losses.get("binary_crossentropy").value_and_grad_logits(y, z),
                _torch_value_and_grad(lambda pt: torch.nn.BCEWithLogitsLoss()(pt, to_torch(y)), z))


def _prob_targets(rng, n, k):
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, size=n)]
    y[0] = rng.dirichlet(np.ones(k))
    return y


def test_categorical_crossentropy_logits_match_torch_cross_entropy(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    y = _prob_targets(rng, 6, 5)
    z = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
    _check_loss(losses.get("categorical_crossentropy").value_and_grad_logits(y, z),
                _torch_value_and_grad(lambda zt: F.cross_entropy(zt, to_torch(y)), z))


def test_categorical_crossentropy_probabilities_match_torch(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    y = _prob_targets(rng, 6, 5)
    z = (rng.normal(size=(6, 5)) * 2).astype(np.float32)
    p = layers.Softmax()(z, training=True)
    loss = losses.get("categorical_crossentropy")
    # d/dp of -mean(sum(y log p)), computed by autograd.
    _check_loss(loss.value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: -(to_torch(y) * torch.log(pt)).sum(-1).mean(), p))
    # Chained through our softmax layer it is torch's cross-entropy gradient w.r.t. logits.
    softmax = layers.Softmax()
    value, dp = loss.value_and_grad(y, softmax(z, training=True))
    _check_loss((value, softmax.backward(dp)),
                _torch_value_and_grad(lambda zt: F.cross_entropy(zt, to_torch(y)), z))


def test_sparse_categorical_crossentropy_logits_match_torch_cross_entropy_loss(torch):
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 5, size=9)
    z = (rng.normal(size=(9, 5)) * 3).astype(np.float32)
    _check_loss(losses.get("sparse_categorical_crossentropy").value_and_grad_logits(labels, z),
                _torch_value_and_grad(lambda zt: torch.nn.CrossEntropyLoss()(zt, torch.tensor(labels)), z))


def test_sparse_categorical_crossentropy_probabilities_match_torch_nll(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 5, size=9)
    p = layers.Softmax()((rng.normal(size=(9, 5)) * 2).astype(np.float32))
    _check_loss(losses.get("sparse_categorical_crossentropy").value_and_grad(labels, p),
                _torch_value_and_grad(lambda pt: F.nll_loss(torch.log(pt), torch.tensor(labels)), p))


# ---- categorical_crossentropy on class ids ----------------------------------------------------
def test_categorical_crossentropy_takes_class_ids_as_their_one_hot_rows():
    """Ids one-hot encoded batch by batch: every form gives, bit for bit, what the one-hot rows
    give, and the per-sample loss is -log p[id] written out by hand."""
    loss = losses.get("categorical_crossentropy")
    rng = np.random.default_rng(8)
    ids = np.array([2, 0, 3, 3, 1])
    rows = np.zeros((5, 4), np.float32)
    rows[[0, 1, 2, 3, 4], [2, 0, 3, 3, 1]] = 1
    z = rng.normal(size=(5, 4)).astype(np.float32)
    p = softmax(z.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(loss.per_sample(ids, p), -np.log(p[np.arange(5), ids]), rtol=1e-6)
    for method, pred in [("per_sample", p), ("per_sample_logits", z)]:
        np.testing.assert_array_equal(getattr(loss, method)(ids, pred), getattr(loss, method)(rows, pred))
    for method, pred in [("value_and_grad", p), ("value_and_grad_logits", z)]:
        (v_ids, g_ids), (v_rows, g_rows) = getattr(loss, method)(ids, pred), getattr(loss, method)(rows, pred)
        assert v_ids == v_rows and g_ids.dtype == np.float32
        np.testing.assert_array_equal(g_ids, g_rows)


def test_categorical_crossentropy_checks_class_ids():
    loss = losses.get("categorical_crossentropy")
    # Spark label columns hold doubles; a column of one value per row arrives as (n, 1).
    for y in ([2.0, 0.0, 1.0], [[2], [0], [1]], np.array([2, 0, 1], np.int32)):
        out = loss.validate_targets(y, (3,))
        assert out.dtype == np.int64 and out.tolist() == [2, 0, 1]
    assert loss.validate_targets(np.eye(3)[[2, 0]], (3,)).shape == (2, 3)    # one-hot rows stay
    with pytest.raises(ValueError, match=r"categorical_crossentropy: expected class ids in \[0, 2\] .* "
                                         r"received values in \[0, 3\]"):
        loss.validate_targets([0.0, 3.0], (3,))
    with pytest.raises(ValueError, match="expected integer class ids, received non-integer values"):
        loss.validate_targets([0.5, 1.0], (3,))
    # One output unit: a number per row is that unit's target, not a class id.
    assert loss.validate_targets([1.0, 0.0], (1,)).shape == (2, 1)
