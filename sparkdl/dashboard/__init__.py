"""The live dashboard of a fit: a small web server on the driver, fed by the fit loop.

``fit(..., dashboard=True)`` (``Model.fit`` and ``SparkModel.fit``) starts a ``Dashboard``
for the length of the fit, ``dashboard="keep"`` leaves it serving the final state until the
process ends (or ``close_dashboards()``). The fit publishes to the dashboard's ``Feed``
through a bounded queue and never waits for it; the server (``http.server`` in daemon
threads) serves a page of our own HTML, JavaScript and SVG, and the same data as JSON at
``<url>api/state?since=N``. Its URL carries a random token; a request without it gets 403.
No Spark here: ``SparkModel.fit`` passes the host and port to bind.
"""
from __future__ import annotations

import logging
from typing import Literal, Union

from sparkdl.dashboard.feed import Feed
from sparkdl.dashboard.server import _OPEN, Dashboard
from sparkdl.dashboard.state import FORMAT_VERSION, State

__all__ = ["Dashboard", "DashboardOption", "FORMAT_VERSION", "Feed", "State", "check_option",
           "close_dashboards", "start"]

logger = logging.getLogger(__name__)

DashboardOption = Union[bool, Literal["keep"]]


def check_option(value: object, who: str) -> DashboardOption:
    """``dashboard`` as given when it is False, True or "keep"; else TypeError (another type)
    or ValueError (another string), naming what was expected and received."""
    if isinstance(value, bool) or value == "keep" and isinstance(value, str):
        return value            # checked: a bool or "keep"
    expected = "expected dashboard=False, True or 'keep'"
    if isinstance(value, str):
        raise ValueError(f"{who}: {expected}, received {value!r}")
    raise TypeError(f"{who}: {expected}, received {type(value).__name__}: {value!r}"[:400])


def start(option: DashboardOption, who: str, host: str = "127.0.0.1", port: int = 0,
          advertise: str | None = None) -> Dashboard | None:
    """A dashboard for one fit (None when ``option`` is False); its URL is logged at INFO."""
    if option is False:
        return None
    try:
        dashboard = Dashboard(host, port, advertise=advertise, keep=option == "keep")
    except OSError as e:
        raise OSError(e.errno, f"{who}: could not serve the dashboard on {host}:{port} ({e.strerror or e}); "
                               f"choose another port (spark.sparkdl.dashboard.port, 0 for any free one)") from e
    logger.info("%s: live dashboard at %s", who, dashboard.url)
    return dashboard


def close_dashboards() -> None:
    """Stop every dashboard still serving (those of ``dashboard="keep"`` fits)."""
    for dashboard in list(_OPEN):
        dashboard.close()
