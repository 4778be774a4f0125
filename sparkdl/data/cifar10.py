"""The CIFAR-10 binary format (the files SparkNet's CifarApp reads), and its download.

Each record is 3,073 bytes: one label byte (0-9), then 3,072 pixel bytes — the 1,024 red
values of the 32x32 image row by row, then green, then blue — which is NCHW already.
Training data is ``data_batch_1.bin`` ... ``data_batch_5.bin``; test data is ``test_batch.bin``.
"""
from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.request

import numpy as np

logger = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file: ``(images uint8 (n, 3, 32, 32), labels int64 (n,))``."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(f"{path}: expected a whole number of {RECORD}-byte CIFAR-10 records, "
                         f"received {raw.size} bytes")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: expected labels 0-9, received {int(labels.max())} (not a CIFAR-10 file?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def find_dir(data_dir) -> str:
    """``data_dir`` itself or its ``cifar-10-batches-bin`` subfolder, whichever holds the files."""
    for candidate in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin")):
        if os.path.exists(os.path.join(candidate, TEST_FILE)):
            return candidate
    raise FileNotFoundError(f"no CIFAR-10 binary files ({TEST_FILE}, data_batch_*.bin) in {data_dir!r} "
                            f"or its cifar-10-batches-bin folder (use --download where there is internet)")


def load(data_dir, scale: bool = True):
    """``(x_train, y_train, x_test, y_test)``; with ``scale`` pixels become float32 in [0, 1]
    minus the training set's mean image (as SparkNet's CifarApp does)."""
    folder = find_dir(data_dir)
    train_files = [os.path.join(folder, f) for f in TRAIN_FILES if os.path.exists(os.path.join(folder, f))]
    if not train_files:
        raise FileNotFoundError(f"no data_batch_*.bin files in {folder!r}")
    parts = [read_batch(f) for f in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(os.path.join(folder, TEST_FILE))
    if not scale:
        return x_train, y_train, x_test, y_test
    x_train = x_train.astype(np.float32) / 255.0
    x_test = x_test.astype(np.float32) / 255.0
    mean = x_train.mean(axis=0, keepdims=True)
    return x_train - mean, y_train, x_test - mean, y_test


def download(data_dir) -> str:
    """Fetch and unpack the binary release into ``data_dir`` (skipped if already there)."""
    try:
        return find_dir(data_dir)
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, "cifar-10-binary.tar.gz")
    logger.info("downloading %s", URL)
    tmp = archive + ".part"
    try:
        with urllib.request.urlopen(URL, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as error:            # no route, refused, timed out, HTTP errors
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = getattr(error, "reason", None) or error
        raise ConnectionError(f"could not download CIFAR-10 from {URL} ({reason}); fetch "
                              f"cifar-10-binary.tar.gz on a machine with internet and unpack it "
                              f"into {data_dir!r}") from None
    os.replace(tmp, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(data_dir, filter="data")
    return find_dir(data_dir)


def write_batch(path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (n, 3, 32, 32) uint8 and labels in the CIFAR-10 binary layout."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
    if images.shape[1] != RECORD - 1:
        raise ValueError(f"write_batch: expected images of 3x32x32 bytes, received {images.shape[1]} per image")
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images], axis=1)
    records.tofile(path)
