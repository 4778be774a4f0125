"""Conv2D, MaxPool2D and AvgPool2D (``sparkdl.engine.layers.conv``) through the shared layer
case: forward passes against the direct references of layer_case (Keras/TensorFlow 'same'
padding: ``out = ceil(n / s)``, the odd cell of padding at the end), float64 central-difference
gradients, and PyTorch parity (torch's ops get the 'same' padding explicitly; for even sizes
'same' pooling with stride 2 is torch's ``ceil_mode=True``). Then max-pool ties, and bad shapes
and arguments, whose messages name the layer, what was received and what was expected."""
from __future__ import annotations

import re

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.models import Input, Sequential
from tests.engine.layer_case import (NUMPY_ACTIVATIONS, LayerCase, distinct_values, float64_layer, pair,
                                     ref_conv, ref_pool, torch_activation, torch_same_pad)
from tests.helpers import esc


def conv_case(in_shape, filters, kernel, strides, padding, output_shape=None, use_bias=True,
              activation=None, logits=False, seed=0, batch=2, scale=0.5):
    kernel, strides = pair(kernel), pair(strides)

    def reference(x, p):
        z = ref_conv(x, p["kernel"], p.get("bias"), strides, padding)
        return z if logits or activation is None else NUMPY_ACTIVATIONS[activation](z)

    def torch_fn(x, p):
        import torch.nn.functional as F
        z = F.conv2d(torch_same_pad(x, kernel, strides, padding), p["kernel"], p.get("bias"), stride=strides)
        return z if activation is None else torch_activation(activation)(z)
    return LayerCase(lambda: layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                           use_bias=use_bias, activation=activation),
                     in_shape, reference=reference, torch_fn=torch_fn, batch=batch, seed=seed, scale=scale,
                     output_shape=output_shape, logits=logits, kink=activation == "relu" and not logits,
                     atol=1e-6, torch_rtol=1e-4, torch_atol=1e-4)


def pool_case(kind, in_shape, pool, strides, padding, output_shape=None, seed=0, batch=2,
              distinct=True, torch_kwargs=None):
    def torch_fn(x, p):
        import torch.nn.functional as F
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        return fn(x, pool, strides, **(torch_kwargs or {}))
    cls = layers.MaxPool2D if kind == "max" else layers.AvgPool2D
    return LayerCase(lambda: cls(pool, strides=strides, padding=padding), in_shape,
                     reference=lambda x, p: ref_pool(x, pool, strides, padding, kind), torch_fn=torch_fn,
                     inputs=distinct_values if distinct else None, output_shape=output_shape,
                     batch=batch, seed=seed, torch_rtol=1e-4, torch_atol=1e-4)


# ---- Conv2D ----------------------------------------------------------------------------------
# (input (C, H, W), filters, kernel, strides, padding, expected output (F, OH, OW)); expected
# sizes by hand: valid (n - k) // s + 1, same ceil(n / s).
CONV_CASES = {
    "valid_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "valid", (3, 5, 8)),
    "valid_s2_3x2": ((3, 7, 9), 2, (3, 2), (2, 2), "valid", (2, 3, 4)),
    "same_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "same", (3, 7, 9)),
    "same_s2_3x2": ((2, 7, 9), 2, (3, 2), (2, 2), "same", (2, 4, 5)),
    "same_s2_3x3_even": ((2, 6, 8), 3, (3, 3), (2, 2), "same", (3, 3, 4)),
    "same_s2_4x4_odd": ((1, 7, 9), 2, (4, 4), (2, 2), "same", (2, 4, 5)),
    "same_s21_2x3": ((2, 5, 7), 2, (2, 3), (2, 1), "same", (2, 3, 7)),
    "valid_s12_1x1": ((3, 5, 6), 4, (1, 1), (1, 2), "valid", (4, 5, 3)),
}


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_forward_matches_direct_loop_and_shape(case, use_bias):
    in_shape, filters, kernel, strides, padding, expected = CONV_CASES[case]
    layer, _, _ = conv_case(in_shape, filters, kernel, strides, padding, expected, use_bias=use_bias,
                            seed=3).check_forward()
    assert layer.params["kernel"].shape == (filters, in_shape[0]) + kernel
    assert ("bias" in layer.params) == use_bias


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_gradients(case, use_bias):
    conv_case(*CONV_CASES[case][:5], use_bias=use_bias, seed=5).check_gradients()


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "softmax"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_gradients_with_activation(activation, padding):
    case = conv_case((2, 7, 9), 3, (3, 2), 2, padding, activation=activation, seed=7)
    case.check_forward()
    case.check_gradients()


def test_conv2d_logits_path_is_the_linear_part():
    case = conv_case((2, 5, 5), 2, 3, 1, "same", activation="sigmoid", logits=True, seed=8)
    case.check_forward()
    case.check_gradients()


def test_conv2d_grads_are_overwritten_not_accumulated_and_skip_dx():
    rng = np.random.default_rng(9)
    layer = float64_layer(layers.Conv2D(2, 3, strides=2, padding="same"), (2, 5, 6), rng)
    x = rng.normal(size=(3, 2, 5, 6))
    G = rng.normal(size=(3, 2, 3, 3))
    layer.forward(x, training=True)
    dx = layer.backward(G)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.backward(G), dx, rtol=1e-12)
    for k in first:
        np.testing.assert_allclose(layer.grads[k], first[k], rtol=1e-12)
    # The bias gradient is the sum of G over batch and positions (hand formula).
    np.testing.assert_allclose(first["bias"], G.sum(axis=(0, 2, 3)), rtol=1e-12)

    layer.needs_input_grad = False
    for g in layer.grads.values():
        g[...] = 0
    layer.forward(x, training=True)
    assert layer.backward(G) is None
    for k in first:
        np.testing.assert_allclose(layer.grads[k], first[k], rtol=1e-12)


# (input (C, H, W), filters, kernel, strides, padding) against torch
TORCH_CONV_CASES = {
    "valid_s1": ((3, 7, 9), 4, (3, 3), (1, 1), "valid"),
    "valid_s2_3x2": ((2, 7, 9), 3, (3, 2), (2, 2), "valid"),
    "same_s1_3x2": ((2, 7, 9), 3, (3, 2), (1, 1), "same"),
    "same_s2_3x3": ((3, 7, 9), 4, (3, 3), (2, 2), "same"),
    "same_s2_even_3x3": ((2, 8, 6), 3, (3, 3), (2, 2), "same"),
    "same_s2_5x4": ((2, 9, 8), 2, (5, 4), (2, 2), "same"),
    "same_s12_2x3": ((1, 6, 7), 2, (2, 3), (1, 2), "same"),
}


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("case", list(TORCH_CONV_CASES))
def test_conv2d_matches_torch(case, activation):
    conv_case(*TORCH_CONV_CASES[case], activation=activation, batch=3, seed=1, scale=0.4).check_torch()


def test_conv2d_same_stride1_odd_kernel_matches_torch_padding_same():
    """For odd kernels and stride 1, the padding is symmetric: torch's padding='same'."""
    torch = pytest.importorskip("torch")
    case = conv_case((2, 6, 7), 3, (3, 5), 1, "same", use_bias=False, seed=2)
    case.torch_fn = lambda x, p: torch.nn.functional.conv2d(x, p["kernel"], padding="same")
    case.check_torch()


# ---- pooling ---------------------------------------------------------------------------------
# (input (C, H, W), pool, strides, padding, expected output (C, OH, OW))
POOL_CASES = {
    "p2s2_valid_7x9": ((2, 7, 9), 2, 2, "valid", (2, 3, 4)),
    "p2s2_same_7x9": ((2, 7, 9), 2, 2, "same", (2, 4, 5)),
    "p3s2_valid_7x9": ((2, 7, 9), 3, 2, "valid", (2, 3, 4)),
    "p3s2_same_7x9": ((2, 7, 9), 3, 2, "same", (2, 4, 5)),
    "p3s2_same_8x6": ((1, 8, 6), 3, 2, "same", (1, 4, 3)),
    "p3s1_same_5x5": ((2, 5, 5), 3, 1, "same", (2, 5, 5)),
    "p2x3_s1x2_valid_5x7": ((2, 5, 7), (2, 3), (1, 2), "valid", (2, 4, 3)),
}


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_forward_matches_direct_loop(case, kind):
    pool_case(kind, *POOL_CASES[case], batch=3, seed=11).check_forward()


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_gradients(case, kind):
    pool_case(kind, *POOL_CASES[case][:4], seed=13).check_gradients()


# torch: 'valid', and 'same' on even sizes (torch's ceil_mode; averages without the padding)
POOL_VALID = {"p2s2_7x9": ((2, 7, 9), 2, 2), "p3s2_7x9": ((2, 7, 9), 3, 2),
              "p3s3_9x8": ((1, 9, 8), 3, 3), "p2x3_s1x2_5x7": ((2, 5, 7), (2, 3), (1, 2))}
POOL_SAME_EVEN = {"p3s2_8x6": ((2, 8, 6), 3, 2), "p2s2_8x6": ((2, 8, 6), 2, 2),
                  "p3s2_32x32": ((1, 32, 32), 3, 2)}


@pytest.mark.parametrize("case", list(POOL_VALID))
def test_max_pool_valid_matches_torch(case):
    shape, pool, stride = POOL_VALID[case]
    pool_case("max", shape, pool, stride, "valid", seed=4).check_torch()


@pytest.mark.parametrize("case", list(POOL_VALID))
def test_avg_pool_valid_matches_torch(case):
    shape, pool, stride = POOL_VALID[case]
    pool_case("avg", shape, pool, stride, "valid", seed=5, distinct=False).check_torch()


@pytest.mark.parametrize("case", list(POOL_SAME_EVEN))
def test_max_pool_same_on_even_sizes_matches_torch_ceil_mode(case):
    shape, pool, stride = POOL_SAME_EVEN[case]
    pool_case("max", shape, pool, stride, "same", seed=6, torch_kwargs={"ceil_mode": True}).check_torch()


@pytest.mark.parametrize("case", list(POOL_SAME_EVEN))
def test_avg_pool_same_on_even_sizes_matches_torch_ceil_mode(case):
    shape, pool, stride = POOL_SAME_EVEN[case]
    pool_case("avg", shape, pool, stride, "same", seed=7, distinct=False,
              torch_kwargs={"ceil_mode": True, "count_include_pad": False}).check_torch()


def test_avg_pool_same_stride1_matches_torch_padding_without_counting_it():
    """Pool 3 stride 1 'same' pads one cell each side: torch padding=1, count_include_pad=False."""
    pool_case("avg", (2, 5, 6), 3, 1, "same", seed=8, distinct=False,
              torch_kwargs={"padding": 1, "count_include_pad": False}).check_torch()


def test_max_pool_ties_go_to_first_maximum_in_row_major_order():
    layer = layers.MaxPool2D(2)
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 3.0]]]])
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, [[[[3.0, 3.0]]]])
    dx = layer.backward(np.array([[[[5.0, 7.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 5.0, 7.0, 0.0],
                                         [0.0, 0.0, 0.0, 0.0]]]])


def test_max_pool_overlapping_windows_sum_their_gradients():
    layer = layers.MaxPool2D(3, strides=2)
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 1, 2] = 9.0  # the maximum of both windows (columns 0-2 and 2-4)
    layer(x, training=True)
    dx = layer.backward(np.array([[[[1.0, 2.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 2] = 3.0
    np.testing.assert_array_equal(dx, expected)

    x = np.zeros((1, 1, 3, 5))  # all tied: first cell of each window
    layer(x, training=True)
    dx = layer.backward(np.array([[[[1.0, 2.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0], expected[0, 0, 0, 2] = 1.0, 2.0
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_same_padding_never_wins():
    layer = layers.MaxPool2D(2, padding="same")
    x = np.full((1, 1, 3, 3), -5.0)
    x[0, 0, 2, 2] = -7.0  # the only real cell of the bottom-right window
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, [[[[-5.0, -5.0], [-5.0, -7.0]]]])
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 2, 2] == 1.0
    assert dx.sum() == 4.0


def test_avg_pool_same_excludes_padding_by_hand():
    layer = layers.AvgPool2D(2, padding="same")
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    y = layer(x, training=True)
    np.testing.assert_allclose(y, [[[[2.0, 3.5], [6.5, 8.0]]]], rtol=1e-12)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(dx, [[[[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 1.0]]]],
                               rtol=1e-12)


def test_pool_default_strides_equal_pool_size():
    layer = layers.AvgPool2D(3)
    x = np.arange(2 * 9 * 9, dtype=np.float64).reshape(1, 2, 9, 9)
    y = layer(x)
    assert y.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(y[0, 1, 2, 0], x[0, 1, 6:9, 0:3].mean(), rtol=1e-12)


# ---- bad shapes ------------------------------------------------------------------------------
def test_2d_array_into_conv_model_built_for_images():
    model = Sequential([Input((1, 28, 28)), layers.Conv2D(2, 3, name="conv_a")])
    x = np.zeros((4, 784), dtype=np.float32)
    with pytest.raises(ValueError, match=esc((None, 1, 28, 28)) + ".*" + esc((4, 784))):
        model.predict(x)
    conv = model.layers[0]
    # the built layer itself, called or run directly
    with pytest.raises(ValueError, match="conv_a.*" + esc((None, 1, 28, 28)) + ".*" + esc((None, 784))):
        conv(x)
    with pytest.raises(ValueError, match="conv_a.*" + esc((None, 1, 28, 28)) + ".*" + esc((4, 784))):
        conv.forward(x)


def test_2d_array_into_unbuilt_conv():
    conv = layers.Conv2D(2, 3, name="conv_unbuilt")
    with pytest.raises(ValueError, match=r"conv_unbuilt.*\(None, channels, height, width\).*"
                                         + esc((None, 784))):
        conv(np.zeros((4, 784), dtype=np.float32))
    a = Input((784,))
    with pytest.raises(ValueError, match="conv_unbuilt.*" + esc((None, 784))):
        conv(a)


def test_conv_channels_mismatch():
    conv = layers.Conv2D(4, 3, name="conv_gray")
    conv(np.zeros((1, 1, 28, 28), dtype=np.float32))
    x = np.zeros((2, 3, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match="conv_gray.*" + esc((None, 1, 28, 28)) + ".*" + esc((None, 3, 28, 28))):
        conv(x)
    with pytest.raises(ValueError, match="conv_gray.*" + esc((None, 1, 28, 28)) + ".*" + esc((2, 3, 28, 28))):
        conv.forward(x)


def test_conv_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"conv_big.*7x7 kernel.*5x5.*" + esc((None, 1, 5, 5))):
        Sequential([Input((1, 5, 5)), layers.Conv2D(4, 7, name="conv_big")])
    with pytest.raises(ValueError, match=r"conv_big2.*7x7 kernel.*5x5.*" + esc((None, 1, 5, 5))):
        layers.Conv2D(4, 7, name="conv_big2")(Input((1, 5, 5)))
    with pytest.raises(ValueError, match=r"conv_tall.*6x2 kernel.*5x9"):
        layers.Conv2D(4, (6, 2), name="conv_tall")(np.zeros((1, 2, 5, 9), dtype=np.float32))
    # 'same' pads enough for any kernel
    assert layers.Conv2D(4, 7, padding="same")(Input((1, 5, 5))).shape == (4, 5, 5)


@pytest.mark.parametrize("cls", [layers.MaxPool2D, layers.AvgPool2D])
def test_pool_larger_than_input(cls):
    with pytest.raises(ValueError, match=r"pool_big.*4x4 kernel.*3x3.*" + esc((None, 2, 3, 3))):
        cls(4, name="pool_big")(np.zeros((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="pool_big2.*" + esc((None, 2, 3, 3))):
        Sequential([Input((2, 3, 3)), cls(4, name="pool_big2")])
    assert cls(4, padding="same")(Input((2, 3, 3))).shape == (2, 1, 1)


def test_pool_on_2d_input():
    with pytest.raises(ValueError, match=r"pool_flat.*\(None, channels, height, width\).*" + esc((None, 10))):
        layers.MaxPool2D(2, name="pool_flat")(Input((10,)))


# ---- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("filters", [0, -3, 2.5, True])
def test_conv_bad_filters(filters):
    with pytest.raises(ValueError, match=f"Conv2D.*filters={re.escape(repr(filters))}"):
        layers.Conv2D(filters=filters, kernel_size=3)


def test_conv_bad_padding():
    with pytest.raises(ValueError, match=r"Conv2D.*'valid' or 'same'.*'full'"):
        layers.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match=r"MaxPool2D.*'full'"):
        layers.MaxPool2D(2, padding="full")


@pytest.mark.parametrize("kwargs, what", [(dict(kernel_size=0), "kernel_size"),
                                          (dict(kernel_size=(3, -1)), "kernel_size"),
                                          (dict(kernel_size=3, strides=(1, 0)), "strides")])
def test_conv_bad_kernel_or_strides(kwargs, what):
    with pytest.raises(ValueError, match=f"Conv2D.*{what}"):
        layers.Conv2D(4, **kwargs)


def test_conv_kernel_size_not_a_pair():
    with pytest.raises(TypeError, match="Conv2D.*kernel_size"):
        layers.Conv2D(4, (3, 3, 3))
