"""Getting a SparkSession with the settings sparkdl wants, for notebooks and scripts.

``get_session()`` returns the active session when there is one (``spark-submit`` or a
notebook that already made one) and otherwise builds one with the properties of the
project's ``spark-defaults.conf`` (no locality wait, Arrow on, the driver's log at warnings
and errors without Spark's start-up lines) plus anything passed in.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: What sparkdl wants from Spark; the same values ship in spark-defaults.conf.
DEFAULTS = {
    "spark.locality.wait": "0",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    "spark.ui.showConsoleProgress": "false",
    "spark.python.worker.reuse": "true",
    # Python workers talk to the JVM over Unix domain sockets: on TCP loopback, delayed ACKs
    # made every task wait ~40 ms for its first input (a round's floor drops from ~0.1 s to ~0.05 s)
    "spark.python.unix.domain.socket.enabled": "true",
}


#: The driver's log settings (warnings and errors, no start-up INFO lines), shipped in the package.
LOG_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")
_LOG_OPTION = "-Dlog4j2.configurationFile="


def _with_log_config(settings: dict[str, Any]) -> None:
    """Point a new driver JVM at sparkdl's log settings, unless its Java options name a log
    configuration of their own (spark-defaults.conf names the package's copy by a path from
    the project root, which is made absolute here)."""
    key = "spark.driver.extraJavaOptions"
    options = str(settings.get(key, ""))
    if _LOG_OPTION not in options:
        settings[key] = f"{options} {_LOG_OPTION}{LOG_CONFIG}".strip()
    else:
        settings[key] = options.replace(f"{_LOG_OPTION}sparkdl/spark/log4j2.properties",
                                        f"{_LOG_OPTION}{LOG_CONFIG}")


def read_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a Spark properties file (``key value`` or ``key=value`` lines, # comments)."""
    props = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" in line and (" " not in line or line.index("=") < line.index(" ")):
                key, value = line.split("=", 1)
            else:
                parts = line.split(None, 1)
                key, value = parts[0], parts[1] if len(parts) > 1 else ""
            props[key.strip()] = value.strip()
    return props


def get_session(master: str | None = None, app_name: str = "sparkdl", conf: dict[str, Any] | None = None,
                properties_file: str | os.PathLike[str] | None = None) -> SparkSession:
    """The active SparkSession, or a new one with sparkdl's defaults.

    ``master`` defaults to ``local[*]`` when nothing else (spark-submit, ``MASTER``) sets it.
    Executors use this interpreter unless ``PYSPARK_PYTHON`` says otherwise.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings: dict[str, Any] = dict(DEFAULTS)
    if properties_file is not None:
        settings.update(read_properties(properties_file))
    settings.update(conf or {})
    _with_log_config(settings)
    builder = SparkSession.builder.appName(app_name)
    master = master or settings.pop("spark.master", None) or os.environ.get("MASTER")
    if master:
        builder = builder.master(master)
    elif "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", "") and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Under spark-submit (a JVM gateway launched this Python) the JVM has the master:
        # pyspark 4 also exports it as MASTER, pyspark 3.5 does not.
        builder = builder.master("local[*]")
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
