"""Conv2D, pooling and BatchNorm against PyTorch in float32 (skipped without torch).

Geometry: sparkdl's 'same' is Keras/TensorFlow's (``out = ceil(n / s)``, total padding split
with the extra cell at the end), so for torch the input is padded explicitly with ``F.pad``
(before = total // 2, after = the rest). For even sizes 'same' pooling with stride 2 equals
torch's ``ceil_mode=True`` (with ``count_include_pad=False`` for averages).
BatchNorm: sparkdl's momentum is Keras' (``moving = m * moving + (1 - m) * batch``), torch's
is ``1 - m``; torch's running_var uses the unbiased variance, sparkdl the biased one.

All values are O(1) float32; we assert within 1e-4.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sparkdl import layers  # noqa: E402
from sparkdl.models import Input, Sequential  # noqa: E402

TOL = 1e-4


def close(actual, expected, tol=TOL, msg=""):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol, err_msg=msg)


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float32), requires_grad=grad)


def tf_same_pads(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def torch_pad(xt, kernel, strides, padding):
    if padding == "valid":
        return xt
    top, bottom = tf_same_pads(xt.shape[2], kernel[0], strides[0])
    left, right = tf_same_pads(xt.shape[3], kernel[1], strides[1])
    return F.pad(xt, (left, right, top, bottom))


# ---- Conv2D ---------------------------------------------------------------------------------
CONV_CASES = {
    "valid_s1": ((3, 7, 9), 4, (3, 3), (1, 1), "valid"),
    "valid_s2_3x2": ((2, 7, 9), 3, (3, 2), (2, 2), "valid"),
    "same_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "same"),
    "same_s2_3x3": ((3, 7, 9), 4, (3, 3), (2, 2), "same"),
    "same_s2_even_3x3": ((2, 8, 6), 3, (3, 3), (2, 2), "same"),
    "same_s2_5x4": ((2, 9, 8), 2, (5, 4), (2, 2), "same"),
    "same_s12_2x3": ((1, 6, 7), 2, (2, 3), (1, 2), "same"),
}


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_matches_torch(case, activation):
    in_shape, filters, kernel, strides, padding = CONV_CASES[case]
    rng = np.random.default_rng(1)
    layer = layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation=activation)
    x = rng.normal(size=(3,) + in_shape).astype(np.float32)
    layer(x[:1])
    layer.params["kernel"][...] = rng.normal(0, 0.4, size=layer.params["kernel"].shape)
    layer.params["bias"][...] = rng.normal(0, 0.4, size=filters)

    xt = t(x, grad=True)
    wt, bt = t(layer.params["kernel"], grad=True), t(layer.params["bias"], grad=True)
    yt = F.conv2d(torch_pad(xt, kernel, strides, padding), wt, bt, stride=strides)
    if activation == "relu":
        yt = F.relu(yt)
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32
    close(y, yt, msg="forward")

    G = rng.normal(size=y.shape).astype(np.float32)
    yt.backward(t(G))
    dx = layer.backward(G)
    close(dx, xt.grad, msg="dx")
    close(layer.grads["kernel"], wt.grad, msg="dkernel")
    close(layer.grads["bias"], bt.grad, msg="dbias")


def test_conv2d_same_stride1_odd_kernel_matches_torch_padding_same():
    """For odd kernels and stride 1, the padding is symmetric: torch's padding='same'."""
    rng = np.random.default_rng(2)
    layer = layers.Conv2D(3, (3, 5), padding="same", use_bias=False)
    x = rng.normal(size=(2, 2, 6, 7)).astype(np.float32)
    layer(x[:1])
    yt = F.conv2d(t(x), t(layer.params["kernel"]), padding="same")
    close(layer(x), yt)


# ---- pooling --------------------------------------------------------------------------------
POOL_VALID = {"p2s2_7x9": ((2, 7, 9), 2, 2), "p3s2_7x9": ((2, 7, 9), 3, 2),
              "p3s3_9x8": ((1, 9, 8), 3, 3), "p2x3_s1x2_5x7": ((2, 5, 7), (2, 3), (1, 2))}
POOL_SAME_EVEN = {"p3s2_8x6": ((2, 8, 6), 3, 2), "p2s2_8x6": ((2, 8, 6), 2, 2),
                  "p3s2_32x32": ((1, 32, 32), 3, 2)}


def distinct(shape, rng):
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0).astype(np.float32)


def pool_pair(layer_cls, torch_fn, x, pool, stride, our_padding, **torch_kwargs):
    layer = layer_cls(pool, strides=stride, padding=our_padding)
    y = layer(x, training=True)
    xt = t(x, grad=True)
    yt = torch_fn(xt, pool, stride, **torch_kwargs)
    close(y, yt, msg="forward")
    G = np.random.default_rng(3).normal(size=y.shape).astype(np.float32)
    yt.backward(t(G))
    close(layer.backward(G), xt.grad, msg="dx")


@pytest.mark.parametrize("case", list(POOL_VALID))
def test_max_pool_valid_matches_torch(case):
    shape, pool, stride = POOL_VALID[case]
    x = distinct((2,) + shape, np.random.default_rng(4))
    pool_pair(layers.MaxPool2D, F.max_pool2d, x, pool, stride, "valid")


@pytest.mark.parametrize("case", list(POOL_VALID))
def test_avg_pool_valid_matches_torch(case):
    shape, pool, stride = POOL_VALID[case]
    x = np.random.default_rng(5).normal(size=(2,) + shape).astype(np.float32)
    pool_pair(layers.AvgPool2D, F.avg_pool2d, x, pool, stride, "valid")


@pytest.mark.parametrize("case", list(POOL_SAME_EVEN))
def test_max_pool_same_on_even_sizes_matches_torch_ceil_mode(case):
    shape, pool, stride = POOL_SAME_EVEN[case]
    x = distinct((2,) + shape, np.random.default_rng(6))
    pool_pair(layers.MaxPool2D, F.max_pool2d, x, pool, stride, "same", ceil_mode=True)


@pytest.mark.parametrize("case", list(POOL_SAME_EVEN))
def test_avg_pool_same_on_even_sizes_matches_torch_ceil_mode(case):
    shape, pool, stride = POOL_SAME_EVEN[case]
    x = np.random.default_rng(7).normal(size=(2,) + shape).astype(np.float32)
    pool_pair(layers.AvgPool2D, F.avg_pool2d, x, pool, stride, "same", ceil_mode=True,
              count_include_pad=False)


def test_avg_pool_same_stride1_matches_torch_padding_without_counting_it():
    """Pool 3 stride 1 'same' pads one cell each side: torch padding=1, count_include_pad=False."""
    x = np.random.default_rng(8).normal(size=(2, 2, 5, 6)).astype(np.float32)
    pool_pair(layers.AvgPool2D, F.avg_pool2d, x, 3, 1, "same", padding=1, count_include_pad=False)


# ---- BatchNorm ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)], ids=["NF", "NCHW"])
def test_batchnorm_training_matches_torch(shape):
    rng = np.random.default_rng(9)
    momentum, eps = 0.9, 1e-3
    layer = layers.BatchNorm(momentum=momentum, epsilon=eps)
    x = rng.normal(1.5, 2.0, size=shape).astype(np.float32)
    layer(x[:2])
    c = shape[1]
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, size=c)
    layer.params["beta"][...] = rng.normal(size=c)
    mm0 = rng.normal(size=c).astype(np.float32)
    mv0 = rng.uniform(0.5, 2.0, size=c).astype(np.float32)
    layer.state["moving_mean"][...] = mm0
    layer.state["moving_variance"][...] = mv0

    xt = t(x, grad=True)
    gt, bt = t(layer.params["gamma"], grad=True), t(layer.params["beta"], grad=True)
    running_mean, running_var = t(mm0), t(mv0)
    yt = F.batch_norm(xt, running_mean, running_var, gt, bt, training=True,
                      momentum=1 - momentum, eps=eps)
    y = layer.forward(x, training=True)
    close(y, yt, msg="forward")
    G = rng.normal(size=shape).astype(np.float32)
    yt.backward(t(G))
    close(layer.backward(G), xt.grad, msg="dx")
    close(layer.grads["gamma"], gt.grad, msg="dgamma")
    close(layer.grads["beta"], bt.grad, msg="dbeta")

    # torch's running_mean follows the same rule; its running_var uses the unbiased variance.
    close(layer.state["moving_mean"], running_mean, tol=1e-6)
    axes = (0,) + tuple(range(2, len(shape)))
    xd = x.astype(np.float64)
    biased = xd.var(axis=axes)
    close(layer.state["moving_variance"], momentum * mv0 + (1 - momentum) * biased, tol=1e-5)
    n = x.size // c
    unbiased_torch = (running_var.numpy() - momentum * mv0) / (1 - momentum)
    close(unbiased_torch * (n - 1) / n, biased, tol=1e-4)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)], ids=["NF", "NCHW"])
def test_batchnorm_eval_matches_torch(shape):
    rng = np.random.default_rng(10)
    layer = layers.BatchNorm(epsilon=1e-3)
    x = rng.normal(size=shape).astype(np.float32)
    layer(x[:2])
    c = shape[1]
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, size=c)
    layer.params["beta"][...] = rng.normal(size=c)
    layer.state["moving_mean"][...] = rng.normal(size=c)
    layer.state["moving_variance"][...] = rng.uniform(0.5, 2.0, size=c)
    yt = F.batch_norm(t(x), t(layer.state["moving_mean"]), t(layer.state["moving_variance"]),
                      t(layer.params["gamma"]), t(layer.params["beta"]), training=False, eps=1e-3)
    close(layer.forward(x, training=False), yt)


# ---- a small CNN, end to end ----------------------------------------------------------------
def test_small_cnn_gradients_match_torch():
    """Conv(same, stride 2) -> BatchNorm -> ReLU -> MaxPool(3/2 same) -> Conv -> AvgPool ->
    Flatten -> Dense softmax with sparse categorical cross-entropy: loss and every parameter
    gradient of Model.compute_gradients against torch autograd."""
    rng = np.random.default_rng(11)
    model = Sequential([
        Input((2, 9, 8)),
        layers.Conv2D(4, 3, strides=2, padding="same"),
        layers.BatchNorm(momentum=0.9),
        layers.ReLU(),
        layers.MaxPool2D(3, strides=2, padding="same"),
        layers.Conv2D(3, (2, 2), padding="same", activation="tanh"),
        layers.AvgPool2D(2, padding="same"),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])
    # 9x8 -> conv s2 same -> 5x4 -> pool 3/2 same -> 3x2 -> conv same -> 3x2 -> avg 2 same -> 2x1
    assert model.layers[3].output_shape == (4, 3, 2)
    assert model.layers[-2].output_shape == (3 * 2 * 1,)
    for w in model.trainable_weights:
        w[...] = rng.normal(0, 0.5, size=w.shape)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(5, 2, 9, 8)).astype(np.float32)
    y = np.array([0, 2, 1, 1, 0])
    conv1, bn, _, _, conv2, _, _, dense = model.layers
    tw = {name: t(arr, grad=True) for name, arr in [
        ("k1", conv1.params["kernel"]), ("b1", conv1.params["bias"]),
        ("gamma", bn.params["gamma"]), ("beta", bn.params["beta"]),
        ("k2", conv2.params["kernel"]), ("b2", conv2.params["bias"]),
        ("dk", dense.params["kernel"]), ("db", dense.params["bias"])]}

    loss, grads = model.compute_gradients(x, y)

    h = F.conv2d(torch_pad(t(x), (3, 3), (2, 2), "same"), tw["k1"], tw["b1"], stride=2)
    h = F.batch_norm(h, None, None, tw["gamma"], tw["beta"], training=True, eps=1e-3)
    h = F.relu(h)
    h = F.max_pool2d(torch_pad_value(h, (3, 3), (2, 2), -float("inf")), 3, 2)
    h = torch.tanh(F.conv2d(torch_pad(h, (2, 2), (1, 1), "same"), tw["k2"], tw["b2"]))
    h = F.avg_pool2d(h, 2, 2, ceil_mode=True)  # 3x2 -> 2x1, last row a 1-cell window
    logits = h.reshape(5, -1) @ tw["dk"] + tw["db"]
    lt = F.cross_entropy(logits, torch.tensor(y))
    lt.backward()
    close(loss, lt.item(), tol=1e-5)
    params = {"k1": conv1.params["kernel"], "b1": conv1.params["bias"], "gamma": bn.params["gamma"],
              "beta": bn.params["beta"], "k2": conv2.params["kernel"], "b2": conv2.params["bias"],
              "dk": dense.params["kernel"], "db": dense.params["bias"]}
    assert len(grads) == len(params) == len(model.trainable_weights)
    seen = set()
    for w, g in zip(model.trainable_weights, grads):
        name = next(n for n, p in params.items() if np.shares_memory(w, p))
        seen.add(name)
        close(g, tw[name].grad, msg=name)
    assert seen == set(params)


def torch_pad_value(xt, kernel, strides, value):
    top, bottom = tf_same_pads(xt.shape[2], kernel[0], strides[0])
    left, right = tf_same_pads(xt.shape[3], kernel[1], strides[1])
    return F.pad(xt, (left, right, top, bottom), value=value)
