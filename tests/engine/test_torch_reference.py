"""sparkdl against PyTorch in float32: layers, activations, losses, optimizer steps, and one
training step of a small MLP. Skipped when torch is not installed.

Tolerances: values here are O(1) and every operation is a short float32 reduction, so the two
libraries differ by a few float32 ulps (~1e-7 relative). We assert rtol=1e-5 and an absolute
floor of 1e-6 unless a comment says otherwise.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sparkdl import layers, losses, optimizers, set_random_seed  # noqa: E402
from sparkdl.models import Sequential  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def close(actual, expected, rtol=RTOL, atol=ATOL, msg=""):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol, err_msg=msg)


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float32), requires_grad=grad)


TORCH_ACT = {
    "linear": lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, negative_slope=0.01),  # sparkdl's default alpha
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda z: torch.softmax(z, dim=-1),
}


# ---- Dense vs nn.Linear -----------------------------------------------------------------------
@pytest.mark.parametrize("activation", list(TORCH_ACT))
def test_dense_matches_torch_linear(activation):
    rng = np.random.default_rng(1)
    layer = layers.Dense(5, activation=activation)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    layer(x[:1])
    layer.params["kernel"][...] = rng.normal(0, 0.5, size=(6, 5))
    layer.params["bias"][...] = rng.normal(0, 0.5, size=5)
    G = rng.normal(size=(8, 5)).astype(np.float32)

    lin = torch.nn.Linear(6, 5)
    with torch.no_grad():
        lin.weight.copy_(t(layer.params["kernel"].T))  # torch stores (out, in); we store (in, out)
        lin.bias.copy_(t(layer.params["bias"]))
    xt = t(x, grad=True)
    yt = TORCH_ACT[activation](lin(xt))
    yt.backward(t(G))

    y = layer.forward(x, training=True)
    assert y.dtype == np.float32
    close(y, yt, msg="forward")
    dx = layer.backward(G)
    close(dx, xt.grad, msg="dx")
    close(layer.grads["kernel"], lin.weight.grad.T, msg="dW")
    close(layer.grads["bias"], lin.bias.grad, msg="db")


# ---- activation layers ------------------------------------------------------------------------
@pytest.mark.parametrize("layer_fn,torch_fn", [
    (layers.ReLU, F.relu),
    (lambda: layers.LeakyReLU(0.2), lambda z: F.leaky_relu(z, 0.2)),
    (layers.Sigmoid, torch.sigmoid),
    (layers.Tanh, torch.tanh),
    (layers.Softmax, lambda z: torch.softmax(z, dim=-1)),
], ids=["relu", "leaky_relu", "sigmoid", "tanh", "softmax"])
def test_activation_layers_match_torch(layer_fn, torch_fn):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(7, 9)) * 3).astype(np.float32)
    x[np.abs(x) < 1e-3] = 0.5  # no exact zeros: ReLU's derivative there is a convention
    G = rng.normal(size=x.shape).astype(np.float32)
    layer = layer_fn()
    y = layer(x, training=True)
    xt = t(x, grad=True)
    yt = torch_fn(xt)
    yt.backward(t(G))
    close(y, yt, msg="forward")
    close(layer.backward(G), xt.grad, msg="backward")


# ---- losses -----------------------------------------------------------------------------------
def _torch_value_and_grad(fn, pred):
    pt = t(pred, grad=True)
    value = fn(pt)
    value.backward()
    return float(value.detach()), pt.grad.numpy()


def _check_loss(ours, theirs):
    (v, g), (tv, tg) = ours, theirs
    close(v, tv, msg="loss value")
    assert g.dtype == np.float32
    close(g, tg, msg="loss gradient")


def test_mse_matches_torch():
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=(2, 6, 4)).astype(np.float32)
    _check_loss(losses.get("mse").value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: F.mse_loss(pt, t(y)), p))


def _bce_data(rng):
    y = rng.integers(0, 2, size=(6, 4)).astype(np.float32)
    y[0] = [0.3, 0.7, 0.5, 0.1]  # soft targets too
    return y


def test_binary_crossentropy_probabilities_match_torch_bce_loss():
    rng = np.random.default_rng(4)
    y = _bce_data(rng)
    p = rng.uniform(0.02, 0.98, size=(6, 4)).astype(np.float32)
    _check_loss(losses.get("binary_crossentropy").value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: torch.nn.BCELoss()(pt, t(y)), p))


def test_binary_crossentropy_logits_match_torch_bce_with_logits():
    rng = np.random.default_rng(5)
    y = _bce_data(rng)
    z = (rng.normal(size=(6, 4)) * 4).astype(np.float32)
    z[1, 0], z[1, 1] = 30.0, -30.0  # saturated logits stay finite and exact
    _check_loss(losses.get("binary_crossentropy").value_and_grad_logits(y, z),
                _torch_value_and_grad(lambda pt: torch.nn.BCEWithLogitsLoss()(pt, t(y)), z))


def _prob_targets(rng, n, k):
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, size=n)]
    y[0] = rng.dirichlet(np.ones(k))
    return y


def test_categorical_crossentropy_logits_match_torch_cross_entropy():
    rng = np.random.default_rng(6)
    y = _prob_targets(rng, 6, 5)
    z = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
    _check_loss(losses.get("categorical_crossentropy").value_and_grad_logits(y, z),
                _torch_value_and_grad(lambda zt: F.cross_entropy(zt, t(y)), z))


def test_categorical_crossentropy_probabilities_match_torch():
    rng = np.random.default_rng(7)
    y = _prob_targets(rng, 6, 5)
    z = (rng.normal(size=(6, 5)) * 2).astype(np.float32)
    p = layers.Softmax()(z, training=True)
    loss = losses.get("categorical_crossentropy")
    # d/dp of -mean(sum(y log p)), computed by autograd.
    _check_loss(loss.value_and_grad(y, p),
                _torch_value_and_grad(lambda pt: -(t(y) * torch.log(pt)).sum(-1).mean(), p))
    # Chained through our softmax layer it is torch's cross-entropy gradient w.r.t. logits.
    softmax = layers.Softmax()
    value, dp = loss.value_and_grad(y, softmax(z, training=True))
    _check_loss((value, softmax.backward(dp)),
                _torch_value_and_grad(lambda zt: F.cross_entropy(zt, t(y)), z))


def test_sparse_categorical_crossentropy_logits_match_torch_cross_entropy_loss():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 5, size=9)
    z = (rng.normal(size=(9, 5)) * 3).astype(np.float32)
    _check_loss(losses.get("sparse_categorical_crossentropy").value_and_grad_logits(labels, z),
                _torch_value_and_grad(lambda zt: torch.nn.CrossEntropyLoss()(zt, torch.tensor(labels)), z))


def test_sparse_categorical_crossentropy_probabilities_match_torch_nll():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 5, size=9)
    p = layers.Softmax()((rng.normal(size=(9, 5)) * 2).astype(np.float32))
    _check_loss(losses.get("sparse_categorical_crossentropy").value_and_grad(labels, p),
                _torch_value_and_grad(lambda pt: F.nll_loss(torch.log(pt), torch.tensor(labels)), p))


# ---- optimizers -------------------------------------------------------------------------------
def _param_and_grads(seed, size=40, steps=5):
    rng = np.random.default_rng(seed)
    p0 = rng.normal(size=size).astype(np.float32)
    # |g| in [0.1, 1]: keeps Adam's epsilon negligible next to sqrt(v) (see the Adam tests).
    gs = (rng.uniform(0.1, 1.0, size=(steps, size)) * rng.choice([-1, 1], size=(steps, size)))
    return p0, gs.astype(np.float32)


def _run_both(ours, make_torch, p0, gs, before_torch_step=None):
    """Apply the same gradient sequence to both; yield the parameters after every step."""
    p = p0.copy()
    pt = torch.nn.Parameter(t(p0))
    opt = make_torch([pt])
    for i, g in enumerate(gs):
        ours.apply(p, g.copy())
        pt.grad = t(g)
        if before_torch_step is not None:
            before_torch_step(opt, i + 1)
        opt.step()
        yield p.copy(), pt.detach().numpy().copy()


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)],
                         ids=["plain", "momentum", "nesterov", "nesterov_0.5"])
def test_sgd_matches_torch(momentum, nesterov):
    # torch keeps buf = m*buf + g and steps -lr*(g + m*buf) (nesterov) or -lr*buf; with a
    # constant lr this is exactly Keras' v = m*v - lr*g with v = -lr*buf.
    p0, gs = _param_and_grads(10)
    ours = optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov)
    steps = list(_run_both(ours, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum,
                                                             nesterov=nesterov), p0, gs))
    for i, (mine, theirs) in enumerate(steps):
        close(mine, theirs, msg=f"step {i + 1}")
    assert not np.allclose(steps[-1][0], p0)


def test_adam_matches_torch_exactly_with_rescaled_epsilon():
    # Keras: p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)
    # torch: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps_t)
    # These are the same update when eps_t = eps / sqrt(bc2), bc2 = 1 - beta_2**t.
    p0, gs = _param_and_grads(11)
    eps, b1, b2 = 1e-3, 0.9, 0.999  # a large epsilon so that a wrong placement would show

    def rescale(opt, step):
        opt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** step)

    ours = optimizers.Adam(learning_rate=0.01, beta_1=b1, beta_2=b2, epsilon=eps)
    steps = _run_both(ours, lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(b1, b2), eps=eps),
                      p0, gs, before_torch_step=rescale)
    for i, (mine, theirs) in enumerate(steps):
        close(mine, theirs, msg=f"step {i + 1}")


def test_adam_matches_torch_with_the_same_epsilon_within_the_placement_gap():
    p0, gs = _param_and_grads(12)
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-7
    # Quantify the formula gap in float64. In Keras terms torch uses eps*sqrt(bc2) instead of
    # eps, so per step the updates differ by at most alpha*|m|/sqrt(v) * eps/sqrt(v) <=
    # lr * eps / sqrt(v) (alpha*|m|/sqrt(v) <= lr for Adam). The smallest sqrt(v) is at step 1,
    # sqrt(1 - b2) * min|g| = 0.0316 * 0.1, giving <= 3.2e-8 per step and <= 1.6e-7 over the
    # 5 steps: two orders of magnitude below the 1e-5 tolerance.
    def simulate(keras):
        p, m, v = p0.astype(np.float64), 0.0, 0.0
        for step, g in enumerate(gs.astype(np.float64), start=1):
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
            if keras:
                p = p - lr * math.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
            else:
                p = p - lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + eps)
        return p

    gap = np.max(np.abs(simulate(True) - simulate(False)))
    assert 0 < gap < 1.6e-7
    *_, (mine, theirs) = _run_both(optimizers.Adam(lr, b1, b2, eps),
                                   lambda ps: torch.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps),
                                   p0, gs)
    close(mine, theirs)
    close(mine, simulate(True), msg="float64 Keras reference")


# ---- one training step of a full model --------------------------------------------------------
def _torch_mlp(model):
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3))
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, d in zip(linears, dense):
            lin.weight.copy_(t(d.params["kernel"].T))
            lin.bias.copy_(t(d.params["bias"]))
    return net, linears, dense


@pytest.mark.parametrize("opt_name", ["sgd_nesterov", "adam"])
def test_mlp_train_on_batch_matches_torch(opt_name):
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
        tloss = F.cross_entropy(net(t(x)), torch.tensor(y))
        tloss.backward()
        if opt_name == "adam":  # same update as Keras' Adam (see test_adam_matches_torch_exactly...)
            topt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** step)
        topt.step()

        close(loss, float(tloss.detach()), msg=f"loss at step {step}")
        for lin, d in zip(linears, dense):
            close(d.params["kernel"], lin.weight.T, msg=f"{d.name} kernel after step {step}")
            close(d.params["bias"], lin.bias, msg=f"{d.name} bias after step {step}")
    assert all(not np.allclose(a, b) for a, b in zip(start, model.get_weights()))
