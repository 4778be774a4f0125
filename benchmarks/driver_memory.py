"""The driver's resident memory while a fit trains, for the sharded-fit benchmarks."""
from __future__ import annotations

import threading
import time


def rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def training_peak():
    """``(callback, peaks)``: a callback that samples the resident memory every 20 ms from
    the first epoch's start (the fit's servers set up) and appends the highest to ``peaks``
    when training ends (before a sharded fit's model comes back into memory)."""
    from sparkdl.engine.callbacks import Callback

    peaks: list[float] = []

    class TrainingPeak(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                self.peak, self.stop = rss_mb(), threading.Event()
                self.thread = threading.Thread(target=self.watch, daemon=True)
                self.thread.start()

        def watch(self):
            while not self.stop.is_set():
                self.peak = max(self.peak, rss_mb())
                time.sleep(0.02)

        def on_train_end(self, logs=None):
            self.stop.set()
            self.thread.join()
            peaks.append(max(self.peak, rss_mb()))

    return TrainingPeak(), peaks
