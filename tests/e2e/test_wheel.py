"""The release artefacts install clean: ``python -m build`` makes an sdist and a wheel of this
checkout (in an isolated build environment, as a release would), ``twine check`` passes on
both, and the wheel holds the package data (``log4j2.properties``, the dashboard's page).
The wheel then goes into a fresh venv (no system site packages), first without pyspark —
numpy, pyarrow and cloudpickle only — where ``import sparkdl`` and a small engine fit (with
the live dashboard, whose page is served from the installed files) work and ``import pyspark``
fails; then pyspark joins the same venv and a one-epoch ``SparkModel.fit`` runs on
``local[2]`` with that venv's Python on the executors, from a directory outside the checkout,
so that the installed wheel is what runs. Versions of the runtime dependencies are those of
this interpreter, so pip takes them from its cache."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import sparkdl
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

RUNTIME = ("numpy", "pyarrow", "cloudpickle")          # install_requires without pyspark
PACKAGE_DATA = ("sparkdl/spark/log4j2.properties", "sparkdl/dashboard/static/index.html",
                "sparkdl/dashboard/static/dashboard.js", "sparkdl/dashboard/static/dashboard.css")
# pip's words for a package index it cannot reach (or that does not have the version).
UNREACHABLE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
               "Max retries exceeded", "Temporary failure in name resolution", "Network is unreachable")

# The small model both scripts train, on ROWS rows of 4 features
MODEL_SETUP = """
sparkdl.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(ROWS, 4)).astype("float32")
y = (x.sum(axis=1) > 0).astype("int64")
model = Sequential([layers.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2, activation="softmax")])
model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
"""

ENGINE_SCRIPT = """
import json, sys, urllib.request
import numpy as np
import sparkdl
from sparkdl import layers, optimizers
from sparkdl.dashboard import close_dashboards
from sparkdl.models import Sequential

""" + MODEL_SETUP.replace("ROWS", "64") + """
history = model.fit(x, y, epochs=3, batch_size=16, seed=0, verbose=0, dashboard="keep")
pages = {}
for name in ("", "dashboard.js"):
    with urllib.request.urlopen(model.dashboard_url + name, timeout=10) as page:
        pages[name or "index.html"] = [page.status, len(page.read())]
close_dashboards()
try:
    import pyspark  # noqa: F401
    has_pyspark = True
except ImportError:
    has_pyspark = False
print(json.dumps({"version": sparkdl.__version__, "file": sparkdl.__file__, "loss": history.history["loss"],
                  "pages": pages, "pyspark": has_pyspark}))
"""

SPARK_SCRIPT = """
import json
import numpy as np
import sparkdl
from sparkdl import layers, optimizers
from sparkdl.models import Sequential
from sparkdl.spark import SparkModel, from_arrays, get_session

spark = get_session("local[2]", app_name="sparkdl-wheel", conf={"spark.ui.enabled": "false"})
spark.sparkContext.setLogLevel("ERROR")
""" + MODEL_SETUP.replace("ROWS", "256") + """
train = from_arrays(spark, x, y, num_partitions=2)
history = SparkModel(model, mode="sync", frequency="epoch", num_workers=2, seed=0).fit(train, epochs=1,
                                                                                       batch_size=32)
workers = spark.sparkContext.parallelize(range(2), 2).map(lambda _: __import__("sparkdl").__file__).collect()
spark.stop()
print(json.dumps({"version": sparkdl.__version__, "file": sparkdl.__file__, "loss": history.history["loss"],
                  "workers": workers}))
"""


def run(args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def pip_install(python: Path, args) -> None:
    done = run([python, "-m", "pip", "install", "--quiet", *args])
    if done.returncode != 0 and any(words in done.stdout + done.stderr for words in UNREACHABLE):
        pytest.skip(f"pip cannot install {' '.join(map(str, args))} from a package index: {done.stderr[-500:]}")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])


def clean_env(venv: Path) -> dict:
    """This process's environment without anything that would point Python at the checkout
    (``PYTHONPATH``) or at another Spark (``SPARK_HOME``), with the venv's Python for Spark."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_SUBMIT_ARGS", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = str(venv / "bin" / "python")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_script(venv: Path, script: str, workdir: Path) -> dict:
    """Runs ``script`` with the venv's Python in ``workdir`` (outside the checkout) and returns
    the JSON its last line prints."""
    path = workdir / "script.py"
    path.write_text(script)
    done = run([venv / "bin" / "python", path], cwd=workdir, env=clean_env(venv))
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict:
    """The sdist and the wheel, built by ``python -m build`` from the checkout's root. The sdist
    step writes ``sparkdl.egg-info`` into the checkout; it is removed again if it was not
    there before."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.skip("the 'build' package is not installed next to this Python (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    egg_info = ROOT / "sparkdl.egg-info"
    had_egg_info = egg_info.exists()
    try:
        done = run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=ROOT)
    finally:
        if not had_egg_info and egg_info.exists():
            shutil.rmtree(egg_info)
    if done.returncode != 0 and any(words in done.stdout + done.stderr for words in UNREACHABLE):
        pytest.skip(f"the build backend (setuptools) cannot be installed into the isolated build environment: "
                    f"{done.stderr[-500:]}")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    version = sparkdl.__version__
    sdist, wheel = out / f"sparkdl-{version}.tar.gz", out / f"sparkdl-{version}-py3-none-any.whl"
    assert sorted(p.name for p in out.iterdir()) == sorted([sdist.name, wheel.name])
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(artefacts, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel and the runtime dependencies other than pyspark, at this
    interpreter's versions."""
    env = tmp_path_factory.mktemp("venv") / "env"
    done = run([sys.executable, "-m", "venv", env], timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    python = env / "bin" / "python"
    pip_install(python, ["--no-deps", artefacts["wheel"]])
    pip_install(python, [f"{name}=={metadata.version(name)}" for name in RUNTIME])
    return env


def test_artefacts_pass_twine_and_hold_the_package_data(artefacts):
    """``twine check`` passes on both; the wheel holds the modules, the package data, the
    license and the metadata of this checkout; the sdist holds what a build needs and no
    local environment, build output or test artefacts."""
    try:
        import twine  # noqa: F401
    except ImportError:
        pytest.skip("the 'twine' package is not installed next to this Python (pip install -e '.[test]')")
    done = run([sys.executable, "-m", "twine", "check", "--strict", artefacts["sdist"], artefacts["wheel"]])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout

    version = sparkdl.__version__
    with zipfile.ZipFile(artefacts["wheel"]) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"sparkdl-{version}.dist-info/METADATA").decode()
    assert set(PACKAGE_DATA) <= names, sorted(names)
    assert {"sparkdl/__init__.py", "sparkdl/spark/spark_model.py", "sparkdl/ml/__init__.py",
            "sparkdl/dashboard/server.py", f"sparkdl-{version}.dist-info/licenses/LICENSE"} <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or n.endswith(".pyc")]
    assert f"Version: {version}\n" in meta and "Requires-Python: >=3.10" in meta
    assert "License-Expression: Apache-2.0" in meta and "Description-Content-Type: text/markdown" in meta

    with tarfile.open(artefacts["sdist"]) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "setup.cfg", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"} <= members
    assert set(PACKAGE_DATA) <= members
    assert not [m for m in members if m.split("/")[0] in (".venv", "build", "dist", "test-artifacts", ".git")]


def test_engine_runs_from_the_wheel_without_pyspark(venv, tmp_path):
    """``import sparkdl`` and an engine fit need only numpy (and the wheel's own files: the
    dashboard's page); pyspark is not there."""
    out = run_script(venv, ENGINE_SCRIPT, tmp_path)
    print("engine:", out)
    assert out["pyspark"] is False
    assert out["version"] == sparkdl.__version__
    assert Path(out["file"]).resolve().is_relative_to(venv.resolve())
    assert len(out["loss"]) == 3 and out["loss"][-1] < out["loss"][0]
    assert out["pages"]["index.html"][0] == 200 and out["pages"]["index.html"][1] > 0
    assert out["pages"]["dashboard.js"][0] == 200 and out["pages"]["dashboard.js"][1] > 0


def test_spark_fit_runs_from_the_wheel_with_pyspark(venv, tmp_path):
    """With pyspark added (this interpreter's version), a one-epoch sync fit on ``local[2]``
    runs the installed wheel on the driver and on the executors."""
    pyspark = pytest.importorskip("pyspark")
    pip_install(venv / "bin" / "python", [f"pyspark=={pyspark.__version__}"])
    out = run_script(venv, SPARK_SCRIPT, tmp_path)
    print("spark:", out)
    assert out["version"] == sparkdl.__version__
    assert Path(out["file"]).resolve().is_relative_to(venv.resolve())
    assert len(out["workers"]) == 2
    assert all(Path(f).resolve().is_relative_to(venv.resolve()) for f in out["workers"]), out["workers"]
    assert len(out["loss"]) == 1 and 0 < out["loss"][0] < 10
