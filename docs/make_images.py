"""Make the documentation's images from a real fit: the live dashboard of a SparkModel fit on the
MNIST 5k digits (captured by headless Chromium while the fit runs, at the end of epoch
``--shot-epoch``) and ``History.plot()`` of the same fit.

    python docs/make_images.py            # writes docs/images/dashboard.png and history_plot.png

Needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver), selenium
and matplotlib (pip install -e ".[test]").
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import sparkdl
from sparkdl import callbacks, dashboard, layers, optimizers
from sparkdl.data.samples import mnist_5k
from sparkdl.models import Sequential
from sparkdl.spark import SparkModel, from_arrays, get_session

OUT = Path(__file__).resolve().parent / "images"


def browser(width: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def save_small(png: bytes, path: Path, colors: int = 96) -> None:
    """A palette PNG: line charts on white need few colours, and stay well under 200 KB."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)


class Shot(callbacks.Callback):
    """At the end of epoch ``epoch``, waits until the page shows that epoch, then captures it."""

    def __init__(self, spark_model: SparkModel, epoch: int, width: int):
        super().__init__()
        self.spark_model, self.at, self.width = spark_model, epoch, width

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 != self.at:
            return
        page = browser(self.width)
        try:
            page.get(self.spark_model.dashboard_url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                charts = page.find_element(By.ID, "charts")
                if len(charts.find_elements(By.CSS_SELECTOR, "figure")) and \
                        page.find_element(By.ID, "epoch").text.startswith(f"{self.at} "):
                    break
                time.sleep(0.2)
            height = page.execute_script("return document.documentElement.scrollHeight")
            page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": self.width, "height": int(height) + 16, "deviceScaleFactor": 1, "mobile": False})
            time.sleep(1.5)          # one more poll, so the layout settles at the new size
            save_small(page.get_screenshot_as_png(), OUT / "dashboard.png")
        finally:
            page.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--shot-epoch", type=int, default=6)
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    OUT.mkdir(parents=True, exist_ok=True)
    spark = get_session("local[2]", app_name="sparkdl-docs-images")
    spark.sparkContext.setLogLevel("ERROR")
    x, y, xt, yt = mnist_5k(0)
    train = from_arrays(spark, x, y, num_partitions=2).cache()
    sparkdl.set_random_seed(0)
    model = Sequential([layers.Input((784,)), layers.Dense(256, activation="relu"),
                        layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")], name="mlp")
    model.compile(optimizers.SGD(learning_rate=0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    spark_model = SparkModel(model, mode="sync", frequency=16, num_workers=2)
    history = spark_model.fit(train, epochs=args.epochs, batch_size=64, verbose=0, validation_data=(xt, yt),
                              callbacks=[Shot(spark_model, args.shot_epoch, args.width)], dashboard="keep")
    figure = history.plot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    save_small(buffer.getvalue(), OUT / "history_plot.png")
    dashboard.close_dashboards()
    spark.stop()
    for name in ("dashboard.png", "history_plot.png"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
