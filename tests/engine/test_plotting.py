"""History.plot: one panel per logged quantity with its training and validation curves, the
round-time breakdown of a SparkModel history, a PNG when given a path, and a clear ImportError
without matplotlib."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparkdl.engine.callbacks import History
from tests.helpers import digits_mlp, one_hot

pytest.importorskip("matplotlib")


def fitted_history():
    rng = np.random.default_rng(0)
    x = rng.random((64, 64), dtype=np.float32)
    y = one_hot(rng.integers(0, 10, 64), 10)
    return digits_mlp().fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.25)


def lines(ax):
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_one_panel_per_quantity_with_training_and_validation(tmp_path):
    import matplotlib.pyplot as plt
    history = fitted_history()
    path = tmp_path / "history.png"
    before = plt.get_fignums()
    figure = history.plot(path)
    assert plt.get_fignums() == before          # the caller's figure, not kept by pyplot
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["loss per epoch", "accuracy per epoch"]
    loss, accuracy = (lines(ax) for ax in visible)
    assert loss == {"training": history.history["loss"], "validation": history.history["val_loss"]}
    assert accuracy == {"training": history.history["accuracy"], "validation": history.history["val_accuracy"]}
    assert list(visible[0].get_lines()[0].get_xdata()) == [1, 2, 3]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rounds_add_the_time_breakdown():
    history = History()
    history.history = {"loss": [1.0, 0.5]}
    history.epoch = [0, 1]
    history.rounds = [{"round": r, "compute_seconds": 0.1 * r, "overhead_seconds": 0.05} for r in (1, 2, 3, 4)]
    figure = history.plot()
    ax = [a for a in figure.axes if a.get_visible()][-1]
    assert ax.get_title() == "seconds per round"
    compute, overhead = ax.containers
    assert [b.get_height() for b in compute] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [b.get_y() for b in overhead] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [b.get_height() for b in overhead] == pytest.approx([0.05] * 4)


def test_an_empty_history_is_refused():
    with pytest.raises(ValueError, match="at least one epoch"):
        History().plot()


def test_without_matplotlib_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    history = History()
    history.history = {"loss": [1.0]}
    with pytest.raises(ImportError, match=r"pip install 'sparkdl\[plot\]'"):
        history.plot()


def test_importing_the_engine_and_fitting_do_not_import_matplotlib():
    code = ("import sys, numpy as np, sparkdl.engine\n"
            "from tests.helpers import digits_mlp, one_hot\n"
            "digits_mlp().fit(np.zeros((8, 64), np.float32), one_hot(np.zeros(8, int), 10), verbose=0)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout
