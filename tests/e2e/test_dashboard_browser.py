"""The live dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) opens the page of a ``local[2]`` fit while it runs,
sees the number of points drawn grow, and at the end shows the last epoch's loss exactly as
the history has it. A screenshot of the page is saved to ``test-artifacts/dashboard.png``.
Where Chromium, its driver or selenium is missing, this test alone is skipped and says which.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from sparkdl import callbacks, dashboard
from sparkdl.spark import SparkModel
from tests.dashboard.helpers import get, wait_for
from tests.helpers import digits_mlp, one_hot, vector_frame

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: Seconds the browser may take to show what the driver has (the page polls every second).
BROWSER_WAIT = 90


def chromium_driver():
    """A headless Chromium under selenium, or skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip(f"headless Chromium is not installed (browser: {browser}, chromedriver: {driver_path}); "
                    f"apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


class Gate(callbacks.Callback):
    """Holds the fit at the end of its first epoch until the test opens the gate."""

    def __init__(self):
        super().__init__()
        self.reached, self.open = threading.Event(), threading.Event()

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.reached.set()
            assert self.open.wait(BROWSER_WAIT * 2), "the test never opened the gate"


def drawn(browser) -> tuple[str, int]:
    """``(status shown, points drawn in every chart)`` as the page has rendered them."""
    from selenium.webdriver.common.by import By
    status = browser.find_element(By.ID, "status").get_attribute("data-status")
    return status, int(browser.find_element(By.ID, "charts").get_attribute("data-points"))


def test_the_page_draws_the_fit_as_it_runs(spark):
    from sparkdl.data.samples import digits
    x, y, _, _ = digits(seed=0)
    df = vector_frame(spark, x[:384], one_hot(y[:384], 10), partitions=2)
    browser = chromium_driver()
    from selenium.webdriver.common.by import By
    spark_model = SparkModel(digits_mlp(), num_workers=2, frequency=2)
    gate, outcome = Gate(), {}

    def fit():
        try:
            outcome["history"] = spark_model.fit(df, epochs=3, batch_size=32, verbose=0, callbacks=[gate],
                                                 validation_split=0.25, dashboard="keep")
        except BaseException as e:      # reported by the test's thread
            outcome["error"] = e
    thread = threading.Thread(target=fit, name="dashboard-browser-fit", daemon=True)
    thread.start()
    try:
        assert gate.reached.wait(BROWSER_WAIT * 2), outcome.get("error")
        url = spark_model.dashboard_url
        browser.get(url)
        status, first = wait_for(lambda: (lambda s: s[1] > 0 and s)(drawn(browser)), "the first points",
                                 BROWSER_WAIT)
        assert status == "running"
        # Without the token, nothing: the page's own server answers 403.
        root = url[: url.index("/", len("http://")) + 1]
        assert get(root)[0] == 403 and get(root + "api/state")[0] == 403
        browser.get(root)
        assert "403" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(url)                                  # and a reload shows the fit again
        wait_for(lambda: drawn(browser)[1] >= first, "the points after a reload", BROWSER_WAIT)
        gate.open.set()
        final = wait_for(lambda: (lambda s: s[0] == "finished" and s)(drawn(browser)), "the finished fit",
                         BROWSER_WAIT)
        assert final[1] > first
        thread.join(BROWSER_WAIT)
        assert "error" not in outcome, outcome.get("error")
        history = outcome["history"]
        shown = browser.find_element(By.ID, "last-loss").get_attribute("data-value")
        assert float(shown) == history.history["loss"][-1]
        loss_line = browser.find_element(By.CSS_SELECTOR, "#chart-loss-round polyline")
        assert int(loss_line.get_attribute("data-points")) == len(history.rounds)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        gate.open.set()
        browser.quit()
        thread.join(BROWSER_WAIT)
        dashboard.close_dashboards()
