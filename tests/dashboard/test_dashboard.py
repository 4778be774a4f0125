"""The live dashboard without a browser: the token guards every URL, the JSON state grows as
the feed publishes and ``since`` returns only new points, a full queue drops and counts instead
of blocking, and ``Model.fit(dashboard=...)`` starts a dashboard for the fit only when asked
and stops it after the fit (unless "keep")."""
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from sparkdl import callbacks, dashboard
from sparkdl.dashboard import Dashboard, Feed
from sparkdl.dashboard.state import plain
from tests.dashboard.helpers import get, state, wait_for
from tests.helpers import digits_mlp, one_hot


@pytest.fixture(scope="module")
def data():
    from sparkdl.data.samples import digits
    x, y, _, _ = digits(seed=0)
    return {"x": x, "y": y}


@pytest.fixture
def board():
    b = Dashboard()
    yield b
    b.close()


def refused(url):
    try:
        urllib.request.urlopen(url, timeout=10)
    except urllib.error.URLError:
        return True
    return False


# ---- the token ------------------------------------------------------------------------------
def test_every_url_without_the_token_is_forbidden(board):
    root = board.url[: -len(board.token) - 1]            # http://host:port/
    other = "x" * len(board.token)
    for path in ("", "api/state", "index.html", "dashboard.js", f"{other}/", f"{other}/api/state",
                 f"{board.token[:-1]}/api/state", f"api/state?token={board.token}"):
        code, body = get(root + path)
        assert code == 403, (path, code)
        assert b"sparkdl" not in body and b"{" not in body
    assert get(board.url)[0] == 200
    assert get(board.url + "nothing-here")[0] == 404


def test_the_page_is_our_own_files_and_fetches_nothing_else(board):
    code, page = get(board.url)
    assert code == 200 and b'src="dashboard.js"' in page
    for name, kind in (("dashboard.js", b"api/state"), ("dashboard.css", b".chart")):
        code, body = get(board.url + name)
        assert code == 200 and kind in body
    for body in (page, get(board.url + "dashboard.js")[1], get(board.url + "dashboard.css")[1]):
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body


# ---- the state ------------------------------------------------------------------------------
def test_state_grows_and_since_returns_only_new_points(board):
    first = state(board.url)
    assert first["status"] == "starting" and first["points"] == [] and first["next"] == 0
    board.feed.begin(who="test", unit="round", epochs=2, points_total=6)
    for i in range(4):
        board.feed.point(epoch=1 + i // 3, loss=1.0 / (i + 1), seconds=0.1)
    board.feed.epoch(0, {"loss": 0.5, "accuracy": 0.25})
    s = wait_for(lambda: (lambda s: s["next"] == 4 and len(s["epochs"]) == 1 and s)(state(board.url)),
                 "four points and an epoch")
    assert s["status"] == "running" and s["fit"]["who"] == "test"
    assert [p["loss"] for p in s["points"]] == [1.0, 0.5, 1 / 3, 0.25]
    assert [p["index"] for p in s["points"]] == [0, 1, 2, 3]
    assert s["epochs"][0]["epoch"] == 1 and s["epochs"][0]["logs"] == {"loss": 0.5, "accuracy": 0.25}
    assert s["progress"]["points"] == 4 and s["progress"]["points_total"] == 6
    assert s["progress"]["epoch"] == 2 and s["progress"]["eta_seconds"] >= 0
    later = state(board.url, since=3)
    assert later["since"] == 3 and later["next"] == 4 and [p["index"] for p in later["points"]] == [3]
    assert state(board.url, since=4)["points"] == []
    board.feed.point(epoch=2, loss=0.2)
    newer = wait_for(lambda: (lambda s: s["next"] == 5 and s)(state(board.url, since=4)), "a fifth point")
    assert [p["loss"] for p in newer["points"]] == [0.2]
    assert get(board.url + "api/state?since=x")[0] == 400


def test_the_final_state_stays_while_kept_and_non_finite_values_are_null():
    board = Dashboard(keep=True)
    try:
        board.feed.begin(unit="round", epochs=1, points_total=1)
        board.feed.point(epoch=1, loss=float("nan"), bytes=np.int64(8), seconds=np.float32(0.5))
        board.finish(failed=False)
        s = state(board.url)
        assert s["status"] == "finished" and s["progress"]["eta_seconds"] == 0.0
        assert s["points"][0]["loss"] is None and s["points"][0]["bytes"] == 8
        assert s["points"][0]["seconds"] == 0.5
    finally:
        dashboard.close_dashboards()
    assert refused(board.url) and not board.running


def test_plain_makes_json_of_numpy_and_non_finite_values():
    value = plain({"a": (np.float64(1.5), float("inf")), 2: [np.int32(3), None, True, "s"]})
    assert value == {"a": [1.5, None], "2": [3, None, True, "s"]}
    json.dumps(value, allow_nan=False)


# ---- the bounded queue ----------------------------------------------------------------------
def test_a_full_feed_drops_and_counts_without_waiting():
    feed = Feed(maxsize=2)
    assert [feed.publish("point", {"i": i}) for i in range(5)] == [True, True, False, False, False]
    assert feed.dropped == 3 and feed.queue.qsize() == 2


def test_the_dashboard_reports_dropped_events_and_keeps_serving(monkeypatch):
    small = Dashboard(maxsize=1)
    try:
        taken, release = threading.Event(), threading.Event()
        apply = small.state.apply

        def slow_apply(kind, event):          # the draining thread stalls on the first event
            taken.set()
            release.wait(30)
            apply(kind, event)
        monkeypatch.setattr(small.state, "apply", slow_apply)
        small.feed.point(epoch=1, loss=1.0)
        assert taken.wait(30)
        published = [small.feed.publish("point", {"epoch": 1, "loss": 2.0 + i}) for i in range(4)]
        assert published == [True, False, False, False]
        assert small.snapshot()["dropped_events"] == 3
        release.set()
        s = wait_for(lambda: (lambda s: s["next"] == 2 and s)(state(small.url)), "the two kept points")
        assert [p["loss"] for p in s["points"]] == [1.0, 2.0] and s["dropped_events"] == 3
    finally:
        release.set()
        small.close()


# ---- the option -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, error", [(1, TypeError), (None, TypeError), ("yes", ValueError),
                                          ("", ValueError), (["keep"], TypeError)])
def test_the_option_is_false_true_or_keep(value, error):
    with pytest.raises(error, match=r"fit: expected dashboard=False, True or 'keep', received"):
        dashboard.check_option(value, "fit")
    for ok in (False, True, "keep"):
        assert dashboard.check_option(ok, "fit") is ok


def test_a_bad_option_fails_before_training():
    model = digits_mlp()
    before = model.get_flat_weights().copy()
    x, y = np.zeros((8, 64), np.float32), one_hot(np.zeros(8, int), 10)
    with pytest.raises(ValueError, match="received 'on'"):
        model.fit(x, y, epochs=1, verbose=0, dashboard="on")
    np.testing.assert_array_equal(model.get_flat_weights(), before)
    assert model.history is None


# ---- Model.fit ------------------------------------------------------------------------------
class Reader(callbacks.Callback):
    """Reads the dashboard's state at the end of every epoch (the fit waits for it here, in
    the test, never in the library)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        url = self.model.dashboard_url
        self.states.append(wait_for(lambda: (lambda s: s["next"] == self.params["steps"] * (epoch + 1) and s)(
            state(url)), "the epoch's batches"))


def test_model_fit_serves_a_dashboard_for_the_fit_only(data):
    x, y = data["x"][:96], one_hot(data["y"][:96], 10)
    model = digits_mlp()
    reader = Reader()
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[reader], dashboard=True,
                        validation_split=0.25)
    first, second = reader.states
    assert first["status"] == "running" and first["fit"]["unit"] == "batch"
    assert first["progress"]["points_total"] == 6 and len(first["points"]) == 3
    assert len(second["points"]) == 6 and len(second["epochs"]) == 1
    assert second["epochs"][0]["logs"]["loss"] == history.history["loss"][0]
    assert set(second["epochs"][0]["logs"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.dashboard_url.startswith("http://127.0.0.1:")
    assert refused(model.dashboard_url)


def test_model_fit_keep_leaves_the_final_state(data):
    x, y = data["x"][:64], one_hot(data["y"][:64], 10)
    model = digits_mlp()
    try:
        history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, dashboard="keep")
        s = state(model.dashboard_url)
        assert s["status"] == "finished" and s["progress"]["points"] == 4
        assert [e["logs"]["loss"] for e in s["epochs"]] == history.history["loss"]
    finally:
        dashboard.close_dashboards()
    assert refused(model.dashboard_url)


def test_model_fit_without_a_dashboard_starts_nothing(data):
    model = digits_mlp()
    model.dashboard_url = "http://old/"
    before = {t.name for t in threading.enumerate()}
    model.fit(data["x"][:32], one_hot(data["y"][:32], 10), epochs=1, verbose=0)
    assert model.dashboard_url is None
    assert not [t for t in threading.enumerate() if t.name.startswith("sparkdl-dashboard")
                and t.name not in before]


def test_a_failed_fit_is_shown_as_failed():
    class Boom(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")
    model = digits_mlp()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            model.fit(np.zeros((8, 64), np.float32), one_hot(np.zeros(8, int), 10), epochs=2, verbose=0,
                      callbacks=[Boom()], dashboard="keep")
        assert state(model.dashboard_url)["status"] == "failed"
    finally:
        dashboard.close_dashboards()


def test_a_port_in_use_is_a_clear_error_before_training():
    taken = Dashboard()
    try:
        with pytest.raises(OSError, match=rf"fit: could not serve the dashboard on 127.0.0.1:{taken.port}"):
            dashboard.start(True, "fit", port=taken.port)
    finally:
        taken.close()
