"""Run by test_standalone.py through spark-submit: one barrier task on every slot reports which
Python runs it and where that Python imports numpy, pyarrow, cloudpickle, sparkdl and pyspark
from (JSON, with the driver's own, to ``--report``); then examples/mnist_app.py runs in the
same application with the remaining arguments.

    spark-submit tests/e2e/executor_python_app.py --report FILE.json --slots 2 [mnist_app.py arguments]
"""
import argparse
import importlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import mnist_app  # noqa: E402

MODULES = ("numpy", "pyarrow", "cloudpickle", "sparkdl", "pyspark")


def python_in_use(_=None):
    """This process's interpreter, prefix, working directory and the files of ``MODULES``."""
    return {"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd(),
            "modules": {name: importlib.import_module(name).__file__ for name in MODULES}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True)
    parser.add_argument("--slots", type=int, default=2, help="tasks of the barrier stage (one per slot)")
    args, rest = parser.parse_known_args()

    from sparkdl.spark import get_session
    sc = get_session(app_name="sparkdl-executor-python").sparkContext
    # A barrier stage runs its tasks at once, so with one slot per executor each executor runs one.
    executors = sc.parallelize(range(args.slots), args.slots).barrier().mapPartitions(
        lambda rows: [python_in_use()]).collect()
    with open(args.report, "w") as f:
        json.dump({"driver": python_in_use(), "executors": executors}, f)
    mnist_app.main(rest)


if __name__ == "__main__":
    main()
