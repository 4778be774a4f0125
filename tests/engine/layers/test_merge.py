"""Add and Concatenate (``sparkdl.engine.layers.merge``) through the shared layer case (forward
against NumPy, float64 central-difference gradients for every input, PyTorch parity), and
inputs whose shapes do not merge."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.models import Input
from tests.engine.layer_case import LayerCase
from tests.helpers import esc


def test_add_forward_and_gradients():
    LayerCase(lambda: layers.Add(), [(2, 4)] * 3, batch=3, output_shape=(2, 4), seed=4,
              reference=lambda xs, p: xs[0] + xs[1] + xs[2],
              torch_fn=lambda xs, p: xs[0] + xs[1] + xs[2], rtol=1e-7, atol=1e-9).check()


@pytest.mark.parametrize("axis, shapes, expected", [
    (-1, [(3, 2), (3, 4)], (3, 6)),
    (1, [(2, 3, 4), (2, 1, 4), (2, 2, 4)], (2, 6, 4)),
    (2, [(2, 3, 1), (2, 3, 2)], (2, 3, 3)),
    (-2, [(2, 1, 3), (2, 2, 3)], (2, 3, 3)),
])
def test_concatenate_forward_and_gradients(axis, shapes, expected):
    # Each input sits at its offset along the axis (the reference is np.concatenate).
    LayerCase(lambda: layers.Concatenate(axis=axis), [s[1:] for s in shapes], batch=expected[0],
              output_shape=expected[1:], seed=5, reference=lambda xs, p: np.concatenate(xs, axis=axis),
              torch_fn=lambda xs, p: __import__("torch").cat(xs, dim=axis), rtol=1e-7, atol=1e-9).check()


# ---- shapes that do not merge ----------------------------------------------------------------
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
