"""Bad shapes, dtypes and arguments for Conv2D, pooling, Embedding, merge layers and
BatchNorm: each raises a ValueError/TypeError whose message names the layer (or the class,
for constructor arguments), what was received and what was expected."""
from __future__ import annotations

import re

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.models import Input, Model, Sequential


def esc(text) -> str:
    return re.escape(str(text))


# ---- Conv2D / pooling shapes ----------------------------------------------------------------
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


# ---- Embedding ids --------------------------------------------------------------------------
def test_float_ids_into_embedding():
    emb = layers.Embedding(10, 2, name="emb_float")
    with pytest.raises(TypeError, match="emb_float.*integer ids.*float64"):
        emb(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="emb_float.*integer ids.*float32"):
        emb.forward(np.array([[1.0, 2.0]], dtype=np.float32))


@pytest.mark.parametrize("ids, received", [([[3, 10]], r"\[3, 10\]"), ([[-1, 4]], r"\[-1, 4\]"),
                                           ([[12, 11]], r"\[11, 12\]")])
def test_embedding_ids_out_of_range(ids, received):
    emb = layers.Embedding(10, 2, name="emb_range")
    with pytest.raises(ValueError, match=r"emb_range.*\[0, 9\].*input_dim=10.*" + received):
        emb(np.array(ids))


def test_embedding_ids_out_of_range_through_a_model():
    ids_in = Input((2,), dtype="int64")
    model = Model(ids_in, layers.Flatten()(layers.Embedding(10, 2, name="emb_model")(ids_in)))
    with pytest.raises(ValueError, match=r"emb_model.*\[0, 9\].*\[0, 10\]"):
        model.predict(np.array([[0, 10]]))
    with pytest.raises(ValueError, match=r"emb_model.*\[0, 9\].*\[-2, 3\]"):
        model.predict(np.array([[3, -2]]))


@pytest.mark.parametrize("kwargs", [dict(input_dim=0, output_dim=2), dict(input_dim=5, output_dim=0),
                                    dict(input_dim=5.0, output_dim=2)])
def test_embedding_bad_dims(kwargs):
    bad = next(k for k, v in kwargs.items() if not (isinstance(v, int) and v > 0))
    with pytest.raises(ValueError, match=f"Embedding.*{bad}"):
        layers.Embedding(**kwargs)


# ---- merge shapes ---------------------------------------------------------------------------
def test_add_of_incompatible_shapes():
    with pytest.raises(ValueError, match=r"add_bad.*one shape.*" + esc([(None, 3), (None, 4)])):
        layers.Add(name="add_bad")([Input((3,)), Input((4,))])
    with pytest.raises(ValueError, match=r"add_bad2.*" + esc([(None, 3), (None, 4)])):
        layers.Add(name="add_bad2")([np.zeros((2, 3)), np.zeros((2, 4))])


def test_add_needs_two_inputs():
    with pytest.raises(ValueError, match="add_one.*at least two"):
        layers.Add(name="add_one")([Input((3,))])


def test_concatenate_shapes():
    ok = layers.Concatenate(axis=-1)([Input((2, 3)), Input((2, 4))])
    assert ok.shape == (2, 7)
    with pytest.raises(ValueError, match=r"cat_bad.*axis -1.*" + esc([(None, 3, 2), (None, 4, 3)])):
        layers.Concatenate(axis=-1, name="cat_bad")([Input((3, 2)), Input((4, 3))])
    with pytest.raises(ValueError, match=r"cat_rank.*" + esc([(None, 3), (None, 3, 1)])):
        layers.Concatenate(name="cat_rank")([Input((3,)), Input((3, 1))])


@pytest.mark.parametrize("axis", [3, 4, -3, -4])
def test_concatenate_axis_outside_the_rank(axis):
    with pytest.raises(ValueError, match=f"cat_axis.*axis {axis}.*" + esc([(None, 2, 3), (None, 2, 3)])):
        layers.Concatenate(axis=axis, name="cat_axis")([Input((2, 3)), Input((2, 3))])


def test_concatenate_batch_axis_rejected():
    with pytest.raises(ValueError, match="Concatenate.*axis=0"):
        layers.Concatenate(axis=0)


# ---- constructor arguments ------------------------------------------------------------------
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


@pytest.mark.parametrize("momentum", [1.5, 1.0, -0.1, "0.9"])
def test_batchnorm_bad_momentum(momentum):
    with pytest.raises(ValueError, match=f"BatchNorm.*momentum={re.escape(repr(momentum))}"):
        layers.BatchNorm(momentum=momentum)


def test_batchnorm_bad_epsilon_and_rank():
    with pytest.raises(ValueError, match="BatchNorm.*epsilon=0"):
        layers.BatchNorm(epsilon=0)
    with pytest.raises(ValueError, match="bn_rank.*" + esc((None, 3, 4))):
        layers.BatchNorm(name="bn_rank")(Input((3, 4)))
