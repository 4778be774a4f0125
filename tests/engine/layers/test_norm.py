"""BatchNorm (``sparkdl.engine.layers.norm``) through the shared layer case, its moving
statistics (Keras momentum: ``moving = m * moving + (1 - m) * batch``, the biased variance) and
its inference pass, against hand formulas and PyTorch (whose momentum is ``1 - m`` and whose
running variance is unbiased)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.models import Input
from tests.engine.layer_case import LayerCase, assert_close, numeric_grad, to_torch


def bn_params(name, shape, rng):
    return rng.uniform(0.5, 1.5, size=shape) if name == "gamma" else rng.normal(size=shape)


def bn_case(shape, seed, momentum=0.9, epsilon=1e-3, **kwargs):
    """A BatchNorm over inputs of ``shape`` (batch axis included), gamma in [0.5, 1.5]."""
    return LayerCase(lambda: layers.BatchNorm(momentum=momentum, epsilon=epsilon), shape[1:],
                     batch=shape[0], params=bn_params, seed=seed,
                     inputs=lambda s, rng: rng.normal(2.0, 3.0, size=s), **kwargs)


def batch_reference(x, p, epsilon=1e-3):
    """Training-mode output: normalised by the batch's mean and biased variance."""
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes).reshape(bshape)
    var = ((x - mean) ** 2).mean(axis=axes).reshape(bshape)
    return p["gamma"].reshape(bshape) * (x - mean) / np.sqrt(var + epsilon) + p["beta"].reshape(bshape)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4), (4, 3, 1, 5)], ids=["NF", "NCHW", "NC1W"])
def test_batchnorm_training_gradients(shape):
    bn_case(shape, seed=17).check_gradients()


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)], ids=["NF", "NCHW"])
def test_batchnorm_training_forward_and_moving_statistics(shape):
    case = bn_case(shape, seed=19, reference=batch_reference, training_forward=True,
                   forward_rtol=1e-10, forward_atol=1e-10)
    layer, x, _ = case.check_forward()
    axes = (0,) + tuple(range(2, len(shape)))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)  # biased
    # From the initial 0 and 1: moving = 0.9 * initial + 0.1 * batch.
    np.testing.assert_allclose(layer.state["moving_mean"], 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(layer.state["moving_variance"], 0.9 + 0.1 * var, rtol=1e-6)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.state["moving_mean"], 0.9 * 0.1 * mean + 0.1 * mean, rtol=1e-6)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)], ids=["NF", "NCHW"])
def test_batchnorm_eval_uses_moving_statistics(shape):
    c = shape[1]
    mm = np.random.default_rng(23).normal(size=c).astype(np.float32)
    mv = np.random.default_rng(24).uniform(0.5, 2.0, size=c).astype(np.float32)
    bshape = (1, c) + (1,) * (len(shape) - 2)

    def reference(x, p):
        return (p["gamma"].reshape(bshape) * (x - mm.astype(np.float64).reshape(bshape))
                / np.sqrt(mv.astype(np.float64).reshape(bshape) + 1e-3) + p["beta"].reshape(bshape))

    def make():
        layer = layers.BatchNorm(epsilon=1e-3)
        layer(np.zeros((2,) + shape[1:], np.float32))
        layer.state["moving_mean"][...] = mm
        layer.state["moving_variance"][...] = mv
        return layer
    case = LayerCase(make, shape[1:], batch=shape[0], params=bn_params, reference=reference, seed=23,
                     forward_rtol=1e-6, forward_atol=1e-6)
    layer, x, _ = case.check_forward()
    np.testing.assert_array_equal(layer.state["moving_mean"], mm)  # eval leaves them alone
    np.testing.assert_array_equal(layer.state["moving_variance"], mv)
    # float32 input stays float32 in eval
    assert layer.forward(x.astype(np.float32), training=False).dtype == np.float32


def test_batchnorm_eval_is_affine_in_x_with_the_moving_scale():
    """In eval, dy/dx per channel is gamma / sqrt(moving_variance + eps) (central difference)."""
    rng = np.random.default_rng(29)
    layer, _ = bn_case((4, 3), seed=29).build(rng)
    layer.state["moving_variance"][...] = [0.5, 2.0, 4.0]
    layer.state["moving_mean"][...] = [1.0, -1.0, 0.0]
    x = rng.normal(size=(4, 3))
    G = rng.normal(size=(4, 3))
    xp = x.copy()
    num = numeric_grad(lambda: float(np.sum(layer.forward(xp, training=False) * G)), xp)
    scale = layer.params["gamma"] / np.sqrt(np.array([0.5, 2.0, 4.0]) + 1e-3)
    np.testing.assert_allclose(num, G * scale, rtol=1e-6)


# ---- against torch ---------------------------------------------------------------------------
def _float32_bn(x, rng, momentum=0.9, eps=1e-3):
    """A float32 BatchNorm built for ``x`` with random gamma, beta and moving statistics."""
    layer = layers.BatchNorm(momentum=momentum, epsilon=eps)
    layer(x[:2])
    c = x.shape[1]
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, size=c)
    layer.params["beta"][...] = rng.normal(size=c)
    layer.state["moving_mean"][...] = rng.normal(size=c)
    layer.state["moving_variance"][...] = rng.uniform(0.5, 2.0, size=c)
    return layer


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)], ids=["NF", "NCHW"])
def test_batchnorm_training_matches_torch(shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    momentum, eps = 0.9, 1e-3
    x = rng.normal(1.5, 2.0, size=shape).astype(np.float32)
    layer = _float32_bn(x, rng, momentum, eps)
    mm0, mv0 = layer.state["moving_mean"].copy(), layer.state["moving_variance"].copy()

    xt = to_torch(x, grad=True)
    gt, bt = to_torch(layer.params["gamma"], grad=True), to_torch(layer.params["beta"], grad=True)
    running_mean, running_var = to_torch(mm0), to_torch(mv0)
    yt = F.batch_norm(xt, running_mean, running_var, gt, bt, training=True, momentum=1 - momentum, eps=eps)
    y = layer.forward(x, training=True)
    tol = {"rtol": 1e-4, "atol": 1e-4}
    assert_close(y, yt, msg="forward", **tol)
    G = rng.normal(size=shape).astype(np.float32)
    yt.backward(to_torch(G))
    assert_close(layer.backward(G), xt.grad, msg="dx", **tol)
    assert_close(layer.grads["gamma"], gt.grad, msg="dgamma", **tol)
    assert_close(layer.grads["beta"], bt.grad, msg="dbeta", **tol)

    # torch's running_mean follows the same rule; its running_var uses the unbiased variance.
    assert_close(layer.state["moving_mean"], running_mean, rtol=1e-6, atol=1e-6)
    axes = (0,) + tuple(range(2, len(shape)))
    biased = x.astype(np.float64).var(axis=axes)
    assert_close(layer.state["moving_variance"], momentum * mv0 + (1 - momentum) * biased, rtol=1e-5, atol=1e-5)
    n = x.size // shape[1]
    unbiased_torch = (running_var.numpy() - momentum * mv0) / (1 - momentum)
    assert_close(unbiased_torch * (n - 1) / n, biased, **tol)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)], ids=["NF", "NCHW"])
def test_batchnorm_eval_matches_torch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x = rng.normal(size=shape).astype(np.float32)
    layer = _float32_bn(x, rng)
    yt = torch.nn.functional.batch_norm(
        to_torch(x), to_torch(layer.state["moving_mean"]), to_torch(layer.state["moving_variance"]),
        to_torch(layer.params["gamma"]), to_torch(layer.params["beta"]), training=False, eps=1e-3)
    assert_close(layer.forward(x, training=False), yt, rtol=1e-4, atol=1e-4)


# ---- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [1.5, 1.0, -0.1, "0.9"])
def test_batchnorm_bad_momentum(momentum):
    with pytest.raises(ValueError, match=f"BatchNorm.*momentum={re.escape(repr(momentum))}"):
        layers.BatchNorm(momentum=momentum)


def test_batchnorm_bad_epsilon_and_rank():
    with pytest.raises(ValueError, match="BatchNorm.*epsilon=0"):
        layers.BatchNorm(epsilon=0)
    with pytest.raises(ValueError, match="bn_rank.*" + re.escape(str((None, 3, 4)))):
        layers.BatchNorm(name="bn_rank")(Input((3, 4)))
