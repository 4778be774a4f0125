"""Whole-model gradients and steps (``sparkdl.engine.model``): ``compute_gradients`` of an MLP
against float64 central differences of the same network written in NumPy, the fused
(softmax/sigmoid + cross-entropy on logits) and unfused paths against each other, and a small
CNN's gradients and an MLP's training steps against PyTorch (skipped without torch)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sparkdl import layers, losses, optimizers, set_random_seed
from sparkdl.models import Input, Sequential
from tests.engine.layer_case import KINK, assert_close, numeric_grad, to_torch, torch_same_pad
from tests.helpers import mlp


def _reference_loss(ws, x, y):
    """Float64 forward of the 5-8-6-4 tanh/relu/softmax MLP and its mean sparse CE."""
    h = np.tanh(x @ ws[0] + ws[1])
    h = np.maximum(h @ ws[2] + ws[3], 0)
    z = h @ ws[4] + ws[5]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def test_model_gradients_match_float64_central_differences():
    model = mlp(layers.Dense(4, activation="softmax"), hidden=(8, 6), std=0.6, seed=61)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ws = [w.astype(np.float64) for w in model.trainable_weights]
    rng = np.random.default_rng(62)
    for _ in range(200):  # draw inputs whose ReLU pre-activations all avoid the kink at 0
        x = rng.normal(size=(10, 5)).astype(np.float32)
        x64 = x.astype(np.float64)
        pre_relu = np.tanh(x64 @ ws[0] + ws[1]) @ ws[2] + ws[3]
        if np.min(np.abs(pre_relu)) > KINK:
            break
    else:
        raise AssertionError("could not draw inputs away from the ReLU kink")
    assert np.any(pre_relu < 0) and np.any(pre_relu > 0)  # both ReLU branches are exercised
    y = rng.integers(0, 4, size=10)

    loss, grads = model.compute_gradients(x, y)
    np.testing.assert_allclose(loss, _reference_loss(ws, x64, y), rtol=1e-5)
    assert len(grads) == len(ws) == 6
    for i, (g, w) in enumerate(zip(grads, ws)):
        assert g.shape == w.shape and g.dtype == np.float32
        num = numeric_grad(lambda: _reference_loss(ws, x64, y), w)
        # The model computes in float32: its gradient carries ~1e-7 relative rounding.
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6, err_msg=f"weight {i}")
    # compute_gradients takes no step.
    for w, w0 in zip(model.trainable_weights, ws):
        np.testing.assert_array_equal(w, w0.astype(np.float32))


class _UnfusedSparseCE(losses.SparseCategoricalCrossentropy):
    """Same loss, but never fused with the output softmax: the model must run the
    probability form and back-propagate through the softmax."""
    fusable_activation = None


class _UnfusedCE(losses.CategoricalCrossentropy):
    fusable_activation = None


class _UnfusedBCE(losses.BinaryCrossentropy):
    fusable_activation = None


@pytest.mark.parametrize("loss_name,unfused_cls,out_act", [
    ("sparse_categorical_crossentropy", _UnfusedSparseCE, "softmax"),
    ("categorical_crossentropy", _UnfusedCE, "softmax"),
    ("binary_crossentropy", _UnfusedBCE, "sigmoid"),
])
@pytest.mark.parametrize("separate_activation", [False, True], ids=["Dense(act)", "Dense+Activation"])
def test_fused_and_unfused_paths_agree(loss_name, unfused_cls, out_act, separate_activation):
    def make():
        out = ([layers.Dense(4), layers.Activation(out_act)] if separate_activation
               else [layers.Dense(4, activation=out_act)])
        return mlp(*out, hidden=(8, 6), std=0.6, seed=71)

    rng = np.random.default_rng(72)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    if loss_name == "sparse_categorical_crossentropy":
        y = rng.integers(0, 4, size=12)
    elif loss_name == "categorical_crossentropy":
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=12)]
    else:
        y = rng.integers(0, 2, size=(12, 4)).astype(np.float32)

    fused, unfused = make(), make()
    fused.compile(optimizer="sgd", loss=loss_name)
    unfused.compile(optimizer="sgd", loss=unfused_cls())
    # Private flag, checked only so that this test provably compares two different paths.
    assert fused._fused and not unfused._fused
    for a, b in zip(fused.get_weights(), unfused.get_weights()):
        np.testing.assert_array_equal(a, b)

    loss_f, grads_f = fused.compute_gradients(x, y)
    loss_u, grads_u = unfused.compute_gradients(x, y)
    np.testing.assert_allclose(loss_f, loss_u, rtol=1e-5)
    for gf, gu in zip(grads_f, grads_u):
        # Observed differences are ~6e-8 (float32 rounding of gradients up to ~0.5).
        np.testing.assert_allclose(gf, gu, rtol=1e-5, atol=5e-7)
    # And both are the gradient of the same function: the evaluated loss matches.
    np.testing.assert_allclose(fused.evaluate(x, y)["loss"], loss_f, rtol=1e-5)


# ---- against torch ----------------------------------------------------------------------------
def test_small_cnn_gradients_match_torch(torch):
    """Conv(same, stride 2) -> BatchNorm -> ReLU -> MaxPool(3/2 same) -> Conv -> AvgPool ->
    Flatten -> Dense softmax with sparse categorical cross-entropy: loss and every parameter
    gradient of Model.compute_gradients against torch autograd."""
    F = torch.nn.functional
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
    tw = {name: to_torch(arr, grad=True) for name, arr in [
        ("k1", conv1.params["kernel"]), ("b1", conv1.params["bias"]),
        ("gamma", bn.params["gamma"]), ("beta", bn.params["beta"]),
        ("k2", conv2.params["kernel"]), ("b2", conv2.params["bias"]),
        ("dk", dense.params["kernel"]), ("db", dense.params["bias"])]}

    loss, grads = model.compute_gradients(x, y)

    h = F.conv2d(torch_same_pad(to_torch(x), (3, 3), (2, 2), "same"), tw["k1"], tw["b1"], stride=2)
    h = F.batch_norm(h, None, None, tw["gamma"], tw["beta"], training=True, eps=1e-3)
    h = F.relu(h)
    h = F.max_pool2d(torch_same_pad(h, (3, 3), (2, 2), "same", value=-float("inf")), 3, 2)
    h = torch.tanh(F.conv2d(torch_same_pad(h, (2, 2), (1, 1), "same"), tw["k2"], tw["b2"]))
    h = F.avg_pool2d(h, 2, 2, ceil_mode=True)  # 3x2 -> 2x1, last row a 1-cell window
    logits = h.reshape(5, -1) @ tw["dk"] + tw["db"]
    lt = F.cross_entropy(logits, torch.tensor(y))
    lt.backward()
    assert_close(loss, lt.item(), rtol=1e-5, atol=1e-5)
    params = {"k1": conv1.params["kernel"], "b1": conv1.params["bias"], "gamma": bn.params["gamma"],
              "beta": bn.params["beta"], "k2": conv2.params["kernel"], "b2": conv2.params["bias"],
              "dk": dense.params["kernel"], "db": dense.params["bias"]}
    assert len(grads) == len(params) == len(model.trainable_weights)
    seen = set()
    for w, g in zip(model.trainable_weights, grads):
        name = next(n for n, p in params.items() if np.shares_memory(w, p))
        seen.add(name)
        assert_close(g, tw[name].grad, rtol=1e-4, atol=1e-4, msg=name)
    assert seen == set(params)


def _torch_mlp(model):
    import torch
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3))
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, d in zip(linears, dense):
            lin.weight.copy_(to_torch(d.params["kernel"].T))
            lin.bias.copy_(to_torch(d.params["bias"]))
    return net, linears, dense


@pytest.mark.parametrize("opt_name", ["sgd_nesterov", "adam"])
def test_mlp_train_on_batch_matches_torch(torch, opt_name):
    set_random_seed(123)
    model = Sequential([layers.Dense(16, activation="relu", input_shape=(20,)),
                        layers.Dense(8, activation="relu"),
                        layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(13)
    for d in model.layers:  # non-zero biases so the bias gradients are exercised
        d.params["bias"][...] = rng.normal(0, 0.1, size=d.params["bias"].shape)
    b1, b2, eps = 0.9, 0.999, 1e-7
    if opt_name == "adam":
        ours = optimizers.Adam(learning_rate=0.01, beta_1=b1, beta_2=b2, epsilon=eps)
    else:
        ours = optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)
    model.compile(optimizer=ours, loss="sparse_categorical_crossentropy")
    net, linears, dense = _torch_mlp(model)
    if opt_name == "adam":
        topt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(b1, b2), eps=eps)
    else:
        topt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    start = model.get_weights()
    for step in range(1, 4):
        x = rng.normal(size=(32, 20)).astype(np.float32)
        y = rng.integers(0, 3, size=32)
        loss = model.train_on_batch(x, y)

        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(to_torch(x)), torch.tensor(y))
        tloss.backward()
        if opt_name == "adam":  # same update as Keras' Adam (see test_adam_matches_torch_exactly...)
            topt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** step)
        topt.step()

        assert_close(loss, float(tloss.detach()), msg=f"loss at step {step}")
        for lin, d in zip(linears, dense):
            assert_close(d.params["kernel"], lin.weight.T, msg=f"{d.name} kernel after step {step}")
            assert_close(d.params["bias"], lin.bias, msg=f"{d.name} bias after step {step}")
    assert all(not np.allclose(a, b) for a, b in zip(start, model.get_weights()))
