"""``History.plot``: a fit's curves as a matplotlib figure.

One panel per logged quantity (the loss, then each metric) with its training and validation
curves per epoch, and, for a ``SparkModel.fit``, one panel of each round's time split into the
slowest worker's compute and the Spark/communication overhead (the ``τ·C + S`` of a round).
matplotlib is imported only here, only when a plot is asked for (the ``plot`` extra); with no
display (and no backend chosen) it draws with Agg. The figure is made by pyplot, so a notebook
shows it as the cell's value, then closed in pyplot, so it is shown once, never kept alive by
pyplot, and belongs to the caller.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Width and height (inches) of one panel.
PANEL = (4.6, 3.2)


def _new_figure(**kwargs: Any) -> Figure:
    try:
        import matplotlib
        headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                             or os.environ.get("WAYLAND_DISPLAY"))
        if headless and "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("History.plot needs matplotlib; install it with pip install 'sparkdl[plot]'") from None
    figure = plt.figure(**kwargs)
    plt.close(figure)
    return figure


def plot_history(history: Any, path: str | os.PathLike[str] | None = None) -> Figure:
    """The figure of ``history`` (see the module docstring); saved as a PNG at ``path`` when
    given."""
    logs: dict[str, list] = history.history
    if not logs:
        raise ValueError("History.plot: expected a history with at least one epoch, received an empty "
                         "history (fit has not completed an epoch)")
    names = [k for k in logs if not k.startswith("val_")]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in names]
    names.sort(key=lambda k: k != "loss")                 # the loss first, metrics as logged
    rounds = [r for r in getattr(history, "rounds", None) or [] if "compute_seconds" in r]
    panels = len(names) + bool(rounds)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = _new_figure(figsize=(PANEL[0] * columns, PANEL[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    epochs = [e + 1 for e in history.epoch] or list(range(1, len(next(iter(logs.values()))) + 1))
    for ax, name in zip(axes, names):
        _epoch_panel(ax, name, epochs, logs)
    if rounds:
        _rounds_panel(axes[len(names)], rounds)
    for ax in axes[panels:]:
        ax.set_visible(False)
    from matplotlib.ticker import MaxNLocator
    for ax in axes[:panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))       # epochs and rounds count
    if path is not None:
        figure.savefig(os.fspath(path), format="png", dpi=100)
    return figure


def _epoch_panel(ax: Axes, name: str, epochs: list[int], logs: dict[str, list]) -> None:
    for key, label, style in ((name, "training", "o-"), (f"val_{name}", "validation", "s--")):
        if key in logs:
            values = logs[key]
            ax.plot(epochs[-len(values):], values, style, markersize=3, label=label)
    ax.set_title(f"{name} per epoch")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()


def _rounds_panel(ax: Axes, rounds: list[dict]) -> None:
    x = [r["round"] for r in rounds]
    compute = [r["compute_seconds"] for r in rounds]
    overhead = [r.get("overhead_seconds", 0.0) for r in rounds]
    ax.bar(x, compute, label="compute (slowest worker)")
    ax.bar(x, overhead, bottom=compute, label="Spark / communication")
    ax.set_title("seconds per round")
    ax.set_xlabel("round")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
