"""Reading a dashboard the way a script does: GET with the standard library, and a bounded
wait for a condition on its JSON state."""
import json
import time
import urllib.error
import urllib.request


def get(url: str) -> tuple[int, bytes]:
    """``(status, body)`` of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def state(url: str, since: int = 0) -> dict:
    code, body = get(f"{url}api/state?since={since}")
    assert code == 200, (code, body)
    return json.loads(body)


def wait_for(condition, what: str, timeout: float = 30.0):
    """Poll ``condition()`` until it returns something truthy (returned), failing after
    ``timeout`` seconds with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
