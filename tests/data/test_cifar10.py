"""The CIFAR-10 binary reader on files written in the exact layout (label byte, then the
red, green and blue planes of a 32x32 image)."""
import numpy as np
import pytest

from sparkdl.data import cifar10


def test_record_layout_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 32, 32)).astype(np.uint8)
    labels = np.array([3, 0, 9, 1, 7])
    cifar10.write_batch(tmp_path / "test_batch.bin", images, labels)
    raw = (tmp_path / "test_batch.bin").read_bytes()
    assert len(raw) == 5 * 3073
    # Record 2: its label byte, then the first red pixel, then the first green pixel.
    assert raw[2 * 3073] == 9
    assert raw[2 * 3073 + 1] == images[2, 0, 0, 0]
    assert raw[2 * 3073 + 1 + 1024] == images[2, 1, 0, 0]
    x, y = cifar10.read_batch(tmp_path / "test_batch.bin")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_load_scales_and_centres(tmp_path):
    rng = np.random.default_rng(1)
    for name in cifar10.TRAIN_FILES[:2]:
        cifar10.write_batch(tmp_path / name, rng.integers(0, 256, (4, 3, 32, 32)), rng.integers(0, 10, 4))
    cifar10.write_batch(tmp_path / cifar10.TEST_FILE, rng.integers(0, 256, (3, 3, 32, 32)), [1, 2, 3])
    x_train, y_train, x_test, y_test = cifar10.load(tmp_path)
    assert x_train.shape == (8, 3, 32, 32) and x_train.dtype == np.float32
    assert x_test.shape == (3, 3, 32, 32) and list(y_test) == [1, 2, 3]
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-6)


def test_truncated_or_foreign_files_are_refused(tmp_path):
    (tmp_path / "test_batch.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(ValueError, match="3073-byte CIFAR-10 records"):
        cifar10.read_batch(tmp_path / "test_batch.bin")
    (tmp_path / "bad.bin").write_bytes(bytes([200]) + b"\x00" * 3072)
    with pytest.raises(ValueError, match="labels 0-9"):
        cifar10.read_batch(tmp_path / "bad.bin")
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 binary files"):
        cifar10.load(tmp_path / "missing")
