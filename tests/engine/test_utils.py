"""``sparkdl.utils``: Keras' ``to_categorical`` (one-hot rows of class ids)."""
import numpy as np
import pytest

from sparkdl.utils import to_categorical


def test_one_hot_rows_as_keras_makes_them():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(to_categorical(np.array([[1], [0]]), 3), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(to_categorical([[1, 2], [0, 0]])[0], [[0, 1, 0], [0, 0, 1]])
    assert to_categorical([1.0, 3.0], 5).dtype == np.float32 and to_categorical([1], 2, "int64").dtype == np.int64


def test_bad_class_ids_are_named():
    with pytest.raises(ValueError, match=r"expected class ids below num_classes=3, received 3"):
        to_categorical([0, 3], 3)
    with pytest.raises(ValueError, match=r"expected class ids >= 0, received -1"):
        to_categorical([0, -1])
    with pytest.raises(ValueError, match=r"expected whole-number class ids, received 1.5"):
        to_categorical([0.0, 1.5])
    with pytest.raises(TypeError, match=r"expected numeric class ids"):
        to_categorical(["a"])
